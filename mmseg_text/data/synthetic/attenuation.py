"""Bones and soft tissue as an X-ray sees them: a map of attenuation (mu * path length) in pixels.

Long bones are hollow tubes (chord through a cortical shell around marrow or spongy bone), carpals are
ellipsoid-like bodies, and soft tissue is a rounded slab around hulls of the bones whose thickness
depends on the person's weight. Exposure and film processing come later, in :mod:`.render`.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from mmseg_text.data.synthetic.anatomy import (_CARPAL_DEPTH, _CARPALS, _MU, _PROXIMAL_ROW, _Body,
                                               ray_bone_names)
from mmseg_text.data.synthetic.bones import BlobBone, Bone, LongBone

def _bbox(points: np.ndarray, size: int, pad: int = 2) -> Optional[tuple[int, int, int, int]]:
    x0, y0 = np.floor(points.min(0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(0)).astype(int) + pad + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _draw_long_bone(att: np.ndarray, bone: LongBone, px_per_mm: float, mu_cortex: float,
                    trabeculae: np.ndarray) -> None:
    """Add the bone's attenuation: chord through the outer tube minus the inner one is cortex; the
    core is marrow or spongy bone, the latter mottled by ``trabeculae`` (a multiplicative field)."""
    box = _bbox(bone.outline(), att.shape[0])
    if box is None:
        return
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - bone.start[0], yy - bone.start[1]
    t = (dx * bone.axis[0] + dy * bone.axis[1]) / bone.length
    s = dx * bone.normal[0] + dy * bone.normal[1]
    inside = (t >= 0) & (t <= 1)
    lo, hi = np.interp(t, bone.u, bone.lo), np.interp(t, bone.u, bone.hi)
    radius = np.where(inside, (hi - lo) / 2, 0)
    offset = s - (hi + lo) / 2
    inner = np.maximum(radius - np.interp(t, bone.u, bone.cortex), 0)
    outer_chord = 2 * np.sqrt(np.maximum(radius ** 2 - offset ** 2, 0))
    inner_chord = 2 * np.sqrt(np.maximum(inner ** 2 - offset ** 2, 0))
    medulla = np.interp(t, bone.u, bone.medulla) * trabeculae[y0:y1, x0:x1]
    chords = mu_cortex * (outer_chord - inner_chord) + medulla * inner_chord
    att[y0:y1, x0:x1] += chords * (bone.depth / px_per_mm)


def _draw_blob_bone(att: np.ndarray, bone: BlobBone, px_per_mm: float, mu_cortex: float, mu_spongy: float,
                    trabeculae: np.ndarray) -> None:
    """Add a carpal as an ellipsoid-like body: thickness from the distance to its outline."""
    box = _bbox(bone.polygon, att.shape[0])
    if box is None:
        return
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(bone.polygon - (x0, y0)).astype(np.int32)], 1)
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    radius = max(float(depth.max()), 1.0)
    inner_radius = max(radius - bone.cortex, 0.5)
    h_outer = np.clip(depth / radius, 0, 1)
    h_inner = np.clip((depth - bone.cortex) / inner_radius, 0, 1)
    outer_chord = 2 * radius * np.sqrt(h_outer * (2 - h_outer))
    inner_chord = 2 * inner_radius * np.sqrt(h_inner * (2 - h_inner))
    spongy = mu_spongy * trabeculae[y0:y1, x0:x1]
    chords = mu_cortex * (outer_chord - inner_chord) + spongy * inner_chord
    att[y0:y1, x0:x1] += chords * (_CARPAL_DEPTH / px_per_mm)


def _soft_tissue_mm(bones: dict[str, Bone], size: int, px_per_mm: float, body: _Body) -> np.ndarray:
    """Soft-tissue thickness (mm): hulls around fingers, palm, thumb web and forearm, grown by a
    weight-dependent margin, smoothed, then given a rounded cross-section and some bulk."""
    rays = ray_bone_names()
    hand = np.zeros((size, size), np.uint8)
    forearm = np.zeros((size, size), np.uint8)
    for chain in rays.values():
        for a, b in zip(chain, chain[1:]):
            _fill_hull(hand, [bones[a], bones[b]])
    metacarpals = [bones[chain[0]] for chain in rays.values()]
    _fill_hull(hand, metacarpals[1:] + [bones[n] for n in _CARPALS])
    _fill_hull(hand, metacarpals[:2])
    _fill_hull(forearm, [bones["Radius"], bones["Ulna"]] + [bones[n] for n in _PROXIMAL_ROW])
    margin = body.soft_margin_mm * px_per_mm
    near_hand = cv2.distanceTransform(255 - hand, cv2.DIST_L2, 5) <= margin
    near_arm = cv2.distanceTransform(255 - forearm, cv2.DIST_L2, 5) <= margin + 7 * body.soft_bulk * px_per_mm
    silhouette = (near_hand | near_arm).astype(np.float32)
    silhouette = (cv2.GaussianBlur(silhouette, (0, 0), 2.0 * px_per_mm) > 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(silhouette, cv2.DIST_L2, 5) / px_per_mm
    rim = 7.0 * body.soft_bulk
    h = np.clip(depth / rim, 0, 1)
    bulk = _low_pass(silhouette.astype(np.float32), 12.0 * px_per_mm)
    return rim * np.sqrt(h * (2 - h)) + 16.0 * body.soft_bulk * bulk * silhouette


def _fill_hull(canvas: np.ndarray, bones: list[Bone]) -> None:
    points = np.concatenate([b.outline() for b in bones]).astype(np.float32)
    hull = cv2.convexHull(points)
    cv2.fillConvexPoly(canvas, np.round(hull).astype(np.int32), 255)


def _low_pass(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A wide Gaussian blur computed at low resolution (a full-size 100-px kernel is needlessly slow)."""
    size = image.shape[0]
    factor = max(1, int(sigma_px // 4))
    small = cv2.resize(image, (max(size // factor, 1),) * 2, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / factor, 0.5))
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def _smooth_noise(size: int, grain_px: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with structures about ``grain_px`` wide (trabeculae, detector mottle)."""
    cells = max(int(size / max(grain_px, 1.0)), 2)
    field = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def _bone_attenuation(bones: list[Bone], size: int, px_per_mm: float, body: _Body,
                      rng: np.random.Generator) -> np.ndarray:
    att = np.zeros((size, size), np.float32)
    mu_cortex = _MU["cortex"] * body.density
    mu_spongy = _MU["spongy"] * body.density
    trabeculae = 1 + 0.12 * _smooth_noise(size, 1.0 * px_per_mm, rng)
    for bone in bones:
        if isinstance(bone, LongBone):
            _draw_long_bone(att, bone, px_per_mm, mu_cortex, trabeculae)
        else:
            _draw_blob_bone(att, bone, px_per_mm, mu_cortex, mu_spongy * bone.core, trabeculae)
    return att
