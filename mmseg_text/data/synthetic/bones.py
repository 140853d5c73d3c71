"""Bone shapes and 2-D affine transforms, shared by the anatomy (millimetres) and the renderer (pixels).

A bone knows its outline and how to move under an affine map, so the same hand can be built once in
the hand frame and then placed on the detector. Angles are degrees and positive when they turn +u
toward +x (toward the ulna in the hand frame; see the package docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

Affine = np.ndarray  # (3, 3) homogeneous 2-D transform


def _turn(deg: float) -> np.ndarray:
    """2x2 rotation turning +u toward +x by ``deg`` (the hand frame's positive, ulnar direction)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, s], [-s, c]])


def _affine(linear: np.ndarray, offset=(0.0, 0.0)) -> Affine:
    out = np.eye(3)
    out[:2, :2] = linear
    out[:2, 2] = offset
    return out


def _turn_about(deg: float, centre) -> Affine:
    centre = np.asarray(centre, dtype=float)
    linear = _turn(deg)
    return _affine(linear, centre - linear @ centre)


def _apply(affine: Affine, points: np.ndarray) -> np.ndarray:
    return points @ affine[:2, :2].T + affine[:2, 2]


@dataclass(frozen=True)
class LongBone:
    """A tube along ``axis`` from ``start``; at fraction u of its length the cross-section spans
    ``[lo(u), hi(u)]`` along ``normal``. Knowing u and the offset of every pixel lets us draw the tube
    as an X-ray sees it: chord length through a cortical shell around a marrow/spongy core."""

    name: str
    start: np.ndarray
    axis: np.ndarray
    normal: np.ndarray
    length: float
    u: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cortex: np.ndarray    # cortical thickness along u, same unit as length
    medulla: np.ndarray   # attenuation per mm inside the cortex: marrow in the shaft, spongy at the ends
    depth: float = 1.0    # front-to-back thickness relative to width (forearm bones are flattish)

    def outline(self) -> np.ndarray:
        along = self.start + np.outer(self.u * self.length, self.axis)
        first = along + np.outer(self.lo, self.normal)
        second = along + np.outer(self.hi, self.normal)
        return np.concatenate([first, second[::-1]])

    def transformed(self, affine: Affine) -> "LongBone":
        linear = affine[:2, :2]
        scale = math.sqrt(abs(np.linalg.det(linear)))
        axis, normal = linear @ self.axis, linear @ self.normal
        return LongBone(self.name, _apply(affine, self.start[None])[0], axis / np.linalg.norm(axis),
                        normal / np.linalg.norm(normal), self.length * scale, self.u, self.lo * scale,
                        self.hi * scale, self.cortex * scale, self.medulla, self.depth)


@dataclass(frozen=True)
class BlobBone:
    """A carpal: a rounded polygon drawn as a thin cortical shell around spongy bone."""

    name: str
    polygon: np.ndarray
    cortex: float      # cortical thickness, same unit as the polygon
    core: float = 1.0  # spongy-bone density inside the cortex (low: a ring, like the hamate's hook)

    def outline(self) -> np.ndarray:
        return self.polygon

    def transformed(self, affine: Affine) -> "BlobBone":
        scale = math.sqrt(abs(np.linalg.det(affine[:2, :2])))
        return BlobBone(self.name, _apply(affine, self.polygon), self.cortex * scale, self.core)


Bone = Union[LongBone, BlobBone]
