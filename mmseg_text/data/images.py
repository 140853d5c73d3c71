"""Read an X-ray into a uint8 grayscale array: 8/16-bit PNG (1 or 3 channels) or DICOM.

Real PNGs are single-channel but often saved as 3-channel; 16-bit files are scaled by their own
intensity range so every image uses the full 0..255 span. Anything unreadable or truncated raises
``ImageReadError`` naming the file, instead of the ``None`` that ``cv2.imread`` returns silently.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DICOM_SUFFIXES = (".dcm", ".dicom")


class ImageReadError(OSError):
    """An image file cannot be decoded; the message names the file and why."""


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
    if hi <= lo:  # a constant image: keep it black rather than dividing by zero
        return np.zeros(image.shape, np.uint8)
    scaled = (values - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _read_dicom(path: Path, percentiles: Optional[tuple[float, float]]) -> np.ndarray:
    import pydicom  # imported lazily: only DICOM inputs need it

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many exception types for broken files
        raise ImageReadError(f"{path}: not a readable DICOM ({type(err).__name__}: {err})") from None
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[0]  # multi-frame: the first frame
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    values = pixels.astype(np.float32) * slope + intercept
    if values.ndim == 3:
        values = cv2.cvtColor(values, cv2.COLOR_RGB2GRAY)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = values.max() - values  # MONOCHROME1 stores bone dark: invert to the usual look
    return _rescale(values, percentiles)


def resize_to_model(image: np.ndarray, image_size: int) -> np.ndarray:
    """The square model input (INTER_AREA). Training (the cache) and prediction both call this, so
    the network sees the same pixels at both."""
    size = int(image_size)
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
