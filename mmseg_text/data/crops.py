"""Foreground-aware random crops from the high-resolution cache (``data.cache_size`` > ``data.crop_size``).

Resolution is what moved the hand-bone leaderboard most, but a 1024² (or 2048²) image does not fit a CPU
batch, and a uniform crop of a radiograph is often background. A training crop here always contains a
foreground pixel: a random labelled pixel is drawn from the entry's foreground map (the OR of its bit-packed
masks, one bit per pixel) and the crop is placed uniformly among the positions that contain it. The crop's
left edge is a multiple of 8, so the masks are sliced while still bit-packed (a 256 crop of a 1024 entry
unpacks 1/16 of its masks). An image without any label gets a uniform crop.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

ALIGN = 8  # pixels per packed byte: crop origins are multiples of this along x


def foreground_map(packed_masks: np.ndarray) -> np.ndarray:
    """(K, S, S/8) packed masks -> (S, S/8) packed map of the pixels that carry any label."""
    return np.bitwise_or.reduce(packed_masks, axis=0)


def pick_origin(foreground: Optional[np.ndarray], size: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """(y0, x0) of a ``crop``² window of a ``size``² image that contains a random foreground pixel.

    ``foreground`` is a packed (size, size/8) map or None; ``x0`` is a multiple of :data:`ALIGN`.
    """
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the cached image ({size})")
    limit = size - crop
    if foreground is not None and foreground.any():
        rows, cols = np.nonzero(foreground)
        i = int(rng.integers(len(rows)))
        bits = np.flatnonzero(np.unpackbits(foreground[rows[i], cols[i]:cols[i] + 1]))
        fy, fx = int(rows[i]), int(cols[i]) * ALIGN + int(rng.choice(bits))
    else:
        fy, fx = int(rng.integers(size)), int(rng.integers(size))
    y0 = int(rng.integers(max(0, fy - crop + 1), min(fy, limit) + 1))
    low = -(-max(0, fx - crop + 1) // ALIGN)  # in units of ALIGN, rounded into the range
    high = min(fx, limit) // ALIGN
    x0 = int(rng.integers(low, high + 1)) * ALIGN if low <= high else high * ALIGN
    return y0, x0


def check_crop_sizes(size: int, crop: int) -> None:
    if crop % ALIGN or size % ALIGN:
        raise ValueError(f"data.crop_size ({crop}) and the cache size ({size}) must be multiples of {ALIGN}")
    if crop > size:
        raise ValueError(f"data.crop_size ({crop}) is larger than the cache size ({size})")


def crop_packed(image: np.ndarray, packed: Optional[np.ndarray], y0: int, x0: int, crop: int
                ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The window of an image (S, S) and of its packed masks (K, S, S/8) -> (crop, crop), bool (K, crop, crop).
    Works on memory-mapped arrays: only the window's rows are read."""
    window = np.array(image[y0:y0 + crop, x0:x0 + crop])
    if packed is None:
        return window, None
    bytes_ = np.array(packed[:, y0:y0 + crop, x0 // ALIGN:(x0 + crop) // ALIGN])
    return window, np.unpackbits(bytes_, axis=-1, count=crop).view(bool)
