"""How much an image says about its bones: the contrast-to-noise ratio of the bone edges.

The physical strength of ``--degrade L`` (render.py), measured rather than assumed, so a dose-response
can be plotted against it: (mean intensity inside the bone masks - mean in a thin ring of soft tissue
around them) / the noise std in that ring. The noise comes from differences of neighbouring pixels (a
robust MAD), so the soft tissue's own slopes and the bones' halo do not count as noise.
"""
from __future__ import annotations

import cv2
import numpy as np

from mmseg_text.data.synthetic.render import RenderedImage

RING_PX = 3        # soft tissue this close to a bone outline is its background
_MAD_TO_STD = 1.4826


def bone_masks(rendered: RenderedImage) -> tuple[np.ndarray, np.ndarray]:
    """(inside any labelled bone, a ``RING_PX`` ring of non-bone around them), both boolean."""
    size = rendered.image.shape[0]
    bone = np.zeros((size, size), np.uint8)
    for polygon in rendered.polygons.values():
        cv2.fillPoly(bone, [polygon.astype(np.int32)], 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_PX + 1,) * 2)
    return bone > 0, (cv2.dilate(bone, disc) > 0) & (bone == 0)


def noise_std(image: np.ndarray, region: np.ndarray) -> float:
    """Pixel noise in ``region``: robust std of horizontal neighbour differences, / sqrt 2 (two pixels' noise)."""
    diff = np.diff(image.astype(np.float32), axis=1)[region[:, 1:] & region[:, :-1]]
    if diff.size == 0:
        raise ValueError("no soft-tissue pixels to estimate the noise from")
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return _MAD_TO_STD * mad / np.sqrt(2)


def bone_cnr(rendered: RenderedImage) -> float:
    """Contrast-to-noise ratio of the bone edges of one rendered image (see the module docstring)."""
    image = rendered.image.astype(np.float32)
    bone, ring = bone_masks(rendered)
    return float((image[bone].mean() - image[ring].mean()) / max(noise_std(image, ring), 1e-6))
