"""Bone outlines -> annotation polygons as the real JSONs store them.

The real labels are dense integer polygons inside the image, points about two pixels apart at 1024 px;
outlines that leave the image (the cropped forearm) are clipped to its border first.
"""
from __future__ import annotations

import numpy as np

def _clip_half_plane(poly: np.ndarray, axis: int, bound: float, keep_below: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: keep the part of ``poly`` on one side of x|y = bound."""
    sign = 1.0 if keep_below else -1.0
    inside = sign * (bound - poly[:, axis]) >= 0
    out = []
    for i in range(len(poly)):
        j = (i + 1) % len(poly)
        if inside[i]:
            out.append(poly[i])
        if inside[i] != inside[j]:
            t = (bound - poly[i, axis]) / (poly[j, axis] - poly[i, axis])
            out.append(poly[i] + t * (poly[j] - poly[i]))
    return np.asarray(out, dtype=float).reshape(-1, 2)


def _clip_to_image(poly: np.ndarray, size: int) -> np.ndarray:
    if poly.min() >= 0 and poly.max() <= size - 1:
        return poly
    for axis in (0, 1):
        poly = _clip_half_plane(poly, axis, 0.0, keep_below=False)
        poly = _clip_half_plane(poly, axis, size - 1.0, keep_below=True) if len(poly) else poly
    return poly


def _resample_closed(poly: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` pixels along the closed outline: dense, evenly spaced, like annotators' tools."""
    closed = np.concatenate([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(arc[-1] / step), 12)
    at = np.linspace(0, arc[-1], n, endpoint=False)
    return np.stack([np.interp(at, arc, closed[:, 0]), np.interp(at, arc, closed[:, 1])], axis=1)


def annotation_polygon(outline: np.ndarray, size: int) -> np.ndarray:
    """Integer polygon inside the image, as annotation JSONs store it."""
    clipped = _clip_to_image(outline, size)
    if len(clipped) < 3:
        raise ValueError("a bone fell outside the image; the placement should have prevented this")
    points = np.rint(_resample_closed(clipped, max(1.0, 2.0 * size / 1024))).astype(np.int64)
    keep = np.any(points != np.roll(points, 1, axis=0), axis=1)
    return points[keep]
