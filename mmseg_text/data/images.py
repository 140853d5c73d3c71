"""Read an X-ray into a uint8 grayscale array: 8/16-bit PNG (1 or 3 channels) or DICOM.

Real PNGs are single-channel but often saved as 3-channel; 16-bit files are scaled by their own
intensity range so every image uses the full 0..255 span. A DICOM goes through its modality LUT and
its VOI LUT (window), as a viewer shows it. Anything unreadable or truncated raises
``ImageReadError`` naming the file, instead of the ``None`` that ``cv2.imread`` returns silently.
DICOM needs the ``dicom`` extra (pydicom and the JPEG / JPEG 2000 decoders of compressed DX/CR);
without it a .dcm input raises ``MissingDicomSupportError`` naming the file and the pip command.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DICOM_SUFFIXES = (".dcm", ".dicom")
DICOM_INSTALL = "pip install 'mmseg-text[dicom]'"


class ImageReadError(OSError):
    """An image file cannot be decoded; the message names the file and why."""


class MissingDicomSupportError(ImportError):
    """A DICOM file needs pydicom or a decoder plugin that is not installed. An ImportError, not an
    ImageReadError: it is the environment that is wrong, so it stops the run instead of reporting (or
    skipping) each DICOM as a bad file."""


def read_image(path: str | Path, *, percentiles: Optional[tuple[float, float]] = None) -> np.ndarray:
    """Grayscale uint8 (H, W) image from a PNG (8/16-bit, 1/3/4 channels) or a DICOM file.

    ``percentiles=(lo, hi)`` windows 16-bit and DICOM data between those percentiles instead of
    the full min..max range (robust to a few saturated pixels); 8-bit data is returned as stored.
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _read_dicom(path, percentiles)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from None
    if data.startswith(PNG_SIGNATURE) and data.rfind(b"IEND", max(0, len(data) - 16)) < 0:
        # libpng sometimes decodes a cut-off file into a partially black image without error.
        raise ImageReadError(f"{path}: truncated PNG (no IEND chunk at the end, {len(data)} bytes)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (empty, truncated or unknown format)")
    return to_gray_uint8(image, percentiles=percentiles, source=path)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of a PNG from its header (no decode); other formats are decoded."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from None
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(height), int(width)
    return read_image(path).shape[:2]  # type: ignore[return-value]


def to_gray_uint8(image: np.ndarray, *, percentiles: Optional[tuple[float, float]] = None,
                  source: str | Path = "<array>") -> np.ndarray:
    """Any decoded array (H, W[, C]) of uint8/uint16/int/float -> uint8 (H, W)."""
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] in (3, 4):
            code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            image = cv2.cvtColor(image, code)
        else:
            raise ImageReadError(f"{source}: unexpected channel count {image.shape[2]}")
    elif image.ndim != 2:
        raise ImageReadError(f"{source}: unexpected image shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return _rescale(image, percentiles)


def _rescale(image: np.ndarray, percentiles: Optional[tuple[float, float]]) -> np.ndarray:
    values = image.astype(np.float32)
    if percentiles is not None:
        lo, hi = np.percentile(values, percentiles)
    else:
        lo, hi = float(values.min()), float(values.max())
    return _scale_between(values, lo, hi)


def _scale_between(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo`` -> 0 and ``hi`` -> 255, linearly, rounded and clipped."""
    if hi <= lo:  # a constant image: keep it black rather than dividing by zero
        return np.zeros(values.shape, np.uint8)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    scaled = (values - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _read_dicom(path: Path, percentiles: Optional[tuple[float, float]]) -> np.ndarray:
    """Stored values -> modality LUT (rescale) -> VOI LUT (the file's window or LUT) -> uint8, by pydicom's
    own functions; MONOCHROME1 (bone dark) is inverted to the usual look. The file's VOI decides the
    display range and takes precedence over ``percentiles``; without one, the range is min..max or
    ``percentiles`` of the modality values, as for a 16-bit PNG."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
    except ImportError as err:
        raise MissingDicomSupportError(f"{path}: reading DICOM needs pydicom>=3.0 ({err}); "
                                       f"install it with: {DICOM_INSTALL}") from None
    try:
        ds = pydicom.dcmread(path)
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        decoder = get_decoder(syntax) if syntax is not None and syntax.is_compressed else None
    except Exception as err:  # pydicom raises many exception types for broken files
        raise ImageReadError(f"{path}: not a readable DICOM ({type(err).__name__}: {err})") from None
    if decoder is not None and not decoder.is_available:
        raise MissingDicomSupportError(f"{path}: its pixel data are compressed ({syntax.name}) and no decoder "
                                       f"for it is installed ({'; '.join(decoder.missing_dependencies)}); "
                                       f"install them with: {DICOM_INSTALL}")
    try:
        pixels = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            pixels = pixels[0]  # multi-frame: the first frame
        if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour (pydicom gives RGB): no LUTs apply
            return _rescale(cv2.cvtColor(pixels.astype(np.float32), cv2.COLOR_RGB2GRAY), percentiles)
        values = apply_modality_lut(pixels, ds)
        display = _voi_output_range(ds, apply_voi_lut)
        if display is None:
            image = _rescale(values, percentiles)
        else:
            if display.lut and not np.issubdtype(values.dtype, np.integer):
                values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
            image = _scale_between(apply_voi_lut(values, ds), *display.range)
    except Exception as err:
        raise ImageReadError(f"{path}: not a readable DICOM ({type(err).__name__}: {err})") from None
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = 255 - image  # the VOI output's minimum is white in MONOCHROME1
    return image


class _VoiRange(NamedTuple):
    range: tuple[float, float]  # the VOI stage's output for the darkest and the brightest input
    lut: bool  # a VOI LUT Sequence (else a window)


def _voi_output_range(ds: Any, apply_voi_lut: Callable[..., np.ndarray]) -> Optional[_VoiRange]:
    """The output range of the VOI transform that ``apply_voi_lut`` applies (it prefers the LUT), or None.

    A window maps everything below it to pydicom's lowest output and everything above to its highest,
    so passing -inf and +inf through gives that range. A LUT's range is that of its entries (files often
    fill a 16-bit LUT with 12-bit values, so the nominal 0..65535 would leave the image nearly black).
    """
    items = ds.get("VOILUTSequence") or []
    if items and items[0].get("LUTDescriptor") is not None and items[0].get("LUTData") is not None:
        entries, first = int(items[0].LUTDescriptor[0]) or 2 ** 16, int(items[0].LUTDescriptor[1])
        outputs = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds)
        return _VoiRange((float(outputs.min()), float(outputs.max())), lut=True)
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        low, high = apply_voi_lut(np.array([-np.inf, np.inf]), ds)
        return _VoiRange((float(low), float(high)), lut=False)
    return None


def resize_to_model(image: np.ndarray, image_size: int) -> np.ndarray:
    """The square model input (INTER_AREA). Training (the cache) and prediction both call this, so
    the network sees the same pixels at both."""
    size = int(image_size)
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
