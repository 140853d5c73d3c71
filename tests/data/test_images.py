import sys

import cv2
import numpy as np
import pytest

from mmseg_text.data.images import (ImageReadError, MissingDicomSupportError, read_image, read_image_size,
                                    to_gray_uint8)


def _gradient(h=20, w=30):
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def test_8bit_png_is_returned_unchanged(tmp_path):
    image = _gradient()
    cv2.imwrite(str(tmp_path / "a.png"), image)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30)
    np.testing.assert_array_equal(out, image)
    assert read_image_size(tmp_path / "a.png") == (20, 30)


def test_three_channel_png_becomes_gray(tmp_path):
    image = _gradient()
    cv2.imwrite(str(tmp_path / "rgb.png"), np.dstack([image] * 3))
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (20, 30)
    np.testing.assert_array_equal(out, image)


def test_16bit_png_is_scaled_by_its_own_range(tmp_path):
    image = np.linspace(1000, 5000, 20 * 30).reshape(20, 30).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), image)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[-1, -1] == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone mapping
    expected = np.round((image.astype(float) - 1000) / 4000 * 255)
    assert np.abs(out - expected).max() <= 1


def test_percentile_window_clips_outliers():
    image = np.full((10, 10), 1000, np.uint16)
    image[:, 5:] = 2000
    image[0, 0] = 65535  # one hot pixel
    full = to_gray_uint8(image)
    robust = to_gray_uint8(image, percentiles=(1, 98))
    assert full[5, 9] < 30  # the hot pixel squeezes the real range
    assert robust[5, 9] == 255 and robust[5, 0] == 0


@pytest.mark.parametrize("keep", ["half", "no_iend"])
def test_truncated_png_raises_naming_the_file(tmp_path, keep):
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if keep == "half" else data[:-12])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(path)


def test_missing_and_garbage_files_raise(tmp_path):
    with pytest.raises(ImageReadError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(tmp_path / "empty.png")


def _write_dicom(path, pixels, photometric, bits_stored=16, compress=None, **elements):
    """A one-frame grayscale DICOM written by pydicom; ``elements`` are extra keywords (WindowCenter ...)."""
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = np.tile(np.linspace(0, 4000, 16), (8, 1)).astype(np.uint16)
    _write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2")
    _write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    m2, m1 = read_image(tmp_path / "m2.dcm"), read_image(tmp_path / "m1.dcm")
    assert m2.dtype == np.uint8 and m2.shape == (8, 16)
    assert m2[0, 0] == 0 and m2[0, -1] == 255
    assert m1[0, 0] == 255 and m1[0, -1] == 0
    np.testing.assert_array_equal(m1.astype(int), 255 - m2.astype(int))


def test_broken_dicom_raises_naming_the_file(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 50)
    with pytest.raises(ImageReadError, match="bad.dcm"):
        read_image(tmp_path / "bad.dcm")


# A VOI window (PS3.3 C.11.2.1.2.1, LINEAR): x <= c - 0.5 - (w - 1) / 2 -> black,
# x > c - 0.5 + (w - 1) / 2 -> white, else ((x - (c - 0.5)) / (w - 1) + 0.5) of the range.
WINDOW_INPUT = [1000, 1499, 1500, 1750, 2000, 2250, 2499, 2500, 3000]
WINDOW_OUTPUT = [0, 0, 0, 64, 128, 191, 255, 255, 255]  # centre 2000, width 1001 -> 0..255


def test_dicom_voi_window_gives_the_windowed_values(tmp_path):
    pixels = np.array([WINDOW_INPUT], np.uint16)
    _write_dicom(tmp_path / "w.dcm", pixels, "MONOCHROME2", bits_stored=12, WindowCenter=2000, WindowWidth=1001)
    out = read_image(tmp_path / "w.dcm", percentiles=(1, 99))  # the file's own window wins
    assert out.dtype == np.uint8
    assert out[0].tolist() == WINDOW_OUTPUT


def test_dicom_rescale_then_window_then_monochrome1(tmp_path):
    # modality LUT: m = 2 * stored - 1000; window centre 3001, width 2001 in modality units; MONOCHROME1
    stored = np.array([[1000, 1500, 1750, 2000, 2500, 3000]], np.uint16)
    _write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                 WindowCenter=3001, WindowWidth=2001)
    # windowed: 0, 0, 64 (m 2500), 127 (m 3000), 255, 255; MONOCHROME1 shows the low end white
    assert read_image(tmp_path / "m1.dcm")[0].tolist() == [255, 255, 191, 128, 0, 0]


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [256, 1000, 16])  # 256 entries from stored value 1000, 16-bit ...
    lut.add_new("LUTData", "OW", (16 * np.arange(256)).astype("<u2").tobytes())  # ... holding 0..4080
    pixels = np.array([[0, 999, 1000, 1100, 1200, 1255, 3000]], np.uint16)
    _write_dicom(tmp_path / "lut.dcm", pixels, "MONOCHROME2", bits_stored=12, VOILUTSequence=[lut],
                 WindowCenter=500, WindowWidth=100)  # the LUT is preferred over the window
    # the LUT's own range (0..4080) is the display range: stored 1000 + i -> i
    assert read_image(tmp_path / "lut.dcm")[0].tolist() == [0, 0, 0, 100, 200, 255, 255]


def test_dicom_without_voi_uses_its_own_range_after_the_rescale(tmp_path):
    stored = np.array([[10, 20, 30]], np.uint16)
    _write_dicom(tmp_path / "r.dcm", stored, "MONOCHROME2", RescaleSlope=-1, RescaleIntercept=0)
    assert read_image(tmp_path / "r.dcm")[0].tolist() == [255, 128, 0]  # slope -1: 10 is the brightest


def test_compressed_dicom_is_decoded(tmp_path):
    pytest.importorskip("openjpeg", reason="the dicom extra's JPEG 2000 plugin (pylibjpeg-openjpeg)")
    from pydicom.uid import JPEG2000Lossless

    pixels = np.tile(np.array(WINDOW_INPUT, np.uint16), (64, 8))  # openjpeg needs more than a few pixels
    _write_dicom(tmp_path / "j2k.dcm", pixels, "MONOCHROME2", bits_stored=12, compress=JPEG2000Lossless,
                 WindowCenter=2000, WindowWidth=1001)
    import pydicom

    assert pydicom.dcmread(tmp_path / "j2k.dcm").file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert read_image(tmp_path / "j2k.dcm").tolist() == [WINDOW_OUTPUT * 8] * 64


def test_dicom_without_pydicom_says_which_extra_to_install(tmp_path, monkeypatch):
    _write_dicom(tmp_path / "x.dcm", np.zeros((4, 4), np.uint16), "MONOCHROME2")
    for module in [m for m in sys.modules if m == "pydicom" or m.startswith("pydicom.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` now fails
    with pytest.raises(MissingDicomSupportError, match=r"pip install 'mmseg-text\[dicom\]'") as err:
        read_image(tmp_path / "x.dcm")
    assert str(err.value).startswith(f"{tmp_path / 'x.dcm'}: reading DICOM needs pydicom")
    assert isinstance(err.value, ImportError) and not isinstance(err.value, ImageReadError)  # not a bad file


def test_compressed_dicom_without_its_decoder_says_which_extra_to_install(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import RLELossless

    _write_dicom(tmp_path / "rle.dcm", np.zeros((4, 4), np.uint16), "MONOCHROME2", compress=RLELossless)
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    monkeypatch.setattr(type(decoder), "missing_dependencies", property(lambda self: ["pylibjpeg - requires x"]))
    with pytest.raises(MissingDicomSupportError, match=r"\(RLE Lossless\) and no decoder for it is installed "
                                                       r"\(pylibjpeg - requires x\); install them with: "
                                                       r"pip install 'mmseg-text\[dicom\]'$") as err:
        read_image(tmp_path / "rle.dcm")
    assert str(err.value).startswith(f"{tmp_path / 'rle.dcm'}: its pixel data are compressed")
