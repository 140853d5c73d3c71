import cv2
import numpy as np
import pytest

from mmseg_text.data.images import ImageReadError, read_image, read_image_size, to_gray_uint8


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


def _write_dicom(path, pixels, photometric):
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
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
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
