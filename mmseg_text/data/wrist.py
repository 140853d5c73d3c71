"""Wrist angle and hand side derived from bone outlines: the real metadata has neither.

The angle follows what the teams on the real data measured: the forearm axis (radius and ulna) against
the middle-finger axis (its metacarpal). Its sign is anatomical, positive toward the ulna (ulnar
deviation), so mirroring an image changes the side but not the angle. Axes are bone midlines rather
than plain principal axes: only the distal forearm is in the picture, cut by the image border and ending
in a slanted articular surface, and both would tilt a principal axis by several degrees.

Which classes are the radius, the ulna and the middle metacarpal is declared by the class catalogue
(``derived.hand_geometry``); a catalogue without that section has no derived facts at all.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from mmseg_text.catalogue import ClassCatalogue, HandGeometryBones
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.facts import UNKNOWN_FACTS
from mmseg_text.data.layout import ImageRecord

BENT_WRIST_THRESHOLD_DEG = 30.0   # real hands are straight within ±20° or bent 40-60°; 30° splits them
DERIVED_COLUMNS = ["image_id", "person_id", "side", "wrist_angle_deg", "bent_wrist"]
RADIUS, ULNA, MIDDLE_METACARPAL = "radius", "ulna", "middle_metacarpal"  # roles, not class names

Polygons = Mapping[str, np.ndarray]
logger = logging.getLogger(__name__)


class WristGeometryError(ValueError):
    """The polygons cannot give an angle (a bone is missing or degenerate); the message names it."""


def _by_role(polygons: Polygons, bones: HandGeometryBones) -> dict[str, np.ndarray]:
    """The three outlines keyed by role; a missing class is an error naming it."""
    out = {}
    for role, name in zip((RADIUS, ULNA, MIDDLE_METACARPAL), bones.names()):
        if name not in polygons:
            raise WristGeometryError(f"no {name!r} polygon (have {sorted(polygons)})")
        out[role] = polygons[name]
    return out


def wrist_angle_from_polygons(polygons: Polygons, bones: HandGeometryBones) -> float:
    """Signed angle in degrees between the forearm axis and the middle-metacarpal axis.

    Positive when the metacarpal leans toward the ulna (ulnar deviation); unchanged by a mirror.
    """
    roles = _by_role(polygons, bones)
    forearm, lateral = _forearm_frame(roles)
    _, metacarpal = _oriented_axis(_polygon(roles, MIDDLE_METACARPAL), _toward_hand(roles))
    return math.degrees(math.atan2(float(metacarpal @ lateral), float(metacarpal @ forearm)))


def hand_side_from_polygons(polygons: Polygons, bones: HandGeometryBones) -> str:
    """"right" or "left" from the radius-ulna order seen with the fingers up (image y points down).

    In a PA view of a right hand the radius lies on the image's left of the ulna: looking along the
    forearm toward the hand, the ulna is then clockwise of the axis (positive 2-D cross product).
    """
    roles = _by_role(polygons, bones)
    forearm, _ = _forearm_frame(roles)
    radius_to_ulna = _centroid(_polygon(roles, ULNA)) - _centroid(_polygon(roles, RADIUS))
    cross = forearm[0] * radius_to_ulna[1] - forearm[1] * radius_to_ulna[0]
    return "right" if cross > 0 else "left"


def hand_facts(polygons: Polygons, bones: HandGeometryBones) -> dict[str, Any]:
    """``{side, wrist_angle_deg, bent_wrist}`` of one image (raises WristGeometryError)."""
    angle = wrist_angle_from_polygons(polygons, bones)
    return {"side": hand_side_from_polygons(polygons, bones), "wrist_angle_deg": round(angle, 2),
            "bent_wrist": abs(angle) >= BENT_WRIST_THRESHOLD_DEG}




def hand_facts_from_masks(masks: np.ndarray, catalogue: ClassCatalogue) -> dict[str, Any]:
    """Side and wrist angle from predicted masks (K, H, W): the largest outline of each of the three
    bones stands in for its annotation polygon. Unknown when the catalogue declares no hand geometry
    or a bone is missing from the prediction."""
    bones = catalogue.hand_geometry
    if bones is None:
        return dict(UNKNOWN_FACTS)
    polygons = {}
    for name in bones.names():
        contours, _ = cv2.findContours(masks[catalogue.index(name)].astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        largest = max(contours, key=cv2.contourArea) if contours else None
        if largest is None or len(largest) < 3:
            return dict(UNKNOWN_FACTS)
        polygons[name] = largest[:, 0, :].astype(np.float64)
    try:
        return hand_facts(polygons, bones)
    except WristGeometryError:
        return dict(UNKNOWN_FACTS)


def derive_metadata(records: Sequence[ImageRecord], bones: HandGeometryBones, *, skip_bad: bool = False,
                    progress: bool = False) -> pd.DataFrame:
    """Side, wrist angle and bent-wrist flag for every labelled record (``DERIVED_COLUMNS``).

    Records without an annotation JSON are left out. A polygon set that gives no angle is an error
    naming the file, or, with ``skip_bad``, a warning and no row for that image.
    """
    rows = []
    labelled = [r for r in records if r.json_path is not None]
    for record in tqdm(labelled, desc="derive side/wrist angle", unit="img", disable=not progress):
        try:
            facts = hand_facts(load_annotation(record.json_path), bones)
        except (ValueError, OSError) as err:  # AnnotationError and WristGeometryError are ValueErrors
            if not skip_bad:
                raise WristGeometryError(f"{record.json_path}: {err}") from None
            logger.warning("%s: no side/wrist angle (%s)", record.json_path, err)
            continue
        rows.append({"image_id": record.image_id, "person_id": record.person_id, **facts})
    return pd.DataFrame(rows, columns=DERIVED_COLUMNS)


# ----------------------------------------------------------------------------- geometry
def _polygon(polygons: Polygons, name: str) -> np.ndarray:
    if name not in polygons:
        raise WristGeometryError(f"no {name!r} polygon (have {sorted(polygons)})")
    points = np.asarray(polygons[name], dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or abs(_signed_area(points)) < 1e-6:
        raise WristGeometryError(f"{name!r} polygon is degenerate")
    return points


def _signed_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _centroid(points: np.ndarray) -> np.ndarray:
    """Area centroid (not the vertex mean, which follows wherever the annotator clicked densely)."""
    x, y = points[:, 0], points[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = 0.5 * cross.sum()
    return np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)


def _principal_axis(points: np.ndarray) -> np.ndarray:
    """Long axis of the filled polygon from its exact second moments (Green's theorem)."""
    p = points - _centroid(points)
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    sxx = ((x * x + x * xn + xn * xn) * cross).sum()
    syy = ((y * y + y * yn + yn * yn) * cross).sum()
    sxy = ((x * yn + 2 * x * y + 2 * xn * yn + xn * y) * cross).sum() / 2
    values, vectors = np.linalg.eigh(np.array([[sxx, sxy], [sxy, syy]]))
    return vectors[:, int(np.argmax(np.abs(values)))]


def _cross_section_midpoints(points: np.ndarray, origin: np.ndarray, axis: np.ndarray,
                             n: int = 32, trim: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints of the bone's cross-sections perpendicular to ``axis`` as (t, s) pairs: t along the
    axis, s across it. The outermost ``trim`` of the length at each end is left out."""
    normal = np.array([-axis[1], axis[0]])
    t, s = (points - origin) @ axis, (points - origin) @ normal
    t_next, s_next = np.roll(t, -1), np.roll(s, -1)
    span = t.max() - t.min()
    samples = np.linspace(t.min() + trim * span, t.max() - trim * span, n)[:, None]
    crosses = (t - samples) * (t_next - samples) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        at = s + (samples - t) / (t_next - t) * (s_next - s)
    low = np.where(crosses, at, np.inf).min(axis=1)
    high = np.where(crosses, at, -np.inf).max(axis=1)
    ok = np.isfinite(low) & np.isfinite(high)
    return samples[ok, 0], (low[ok] + high[ok]) / 2


def _midline_axis(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, unit direction) of the bone's midline: a line fitted through cross-section midpoints,
    refitted without the worst-fitting quarter so that the slanted or cut ends do not tilt it."""
    centre, axis = _centroid(points), _principal_axis(points)
    for _ in range(2):
        t, mid = _cross_section_midpoints(points, centre, axis)
        if len(t) < 4:
            break
        slope, offset = np.polyfit(t, mid, 1)
        residual = np.abs(mid - (slope * t + offset))
        keep = residual <= np.quantile(residual, 0.75)
        if keep.sum() >= 4:
            slope, offset = np.polyfit(t[keep], mid[keep], 1)
        normal = np.array([-axis[1], axis[0]])
        centre = centre + offset * normal
        axis = (axis + slope * normal) / math.hypot(1.0, slope)
    return centre, axis


def _oriented_axis(points: np.ndarray, toward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The midline pointing toward ``toward`` (a direction), so axes of different bones compare."""
    centre, axis = _midline_axis(points)
    return centre, axis if axis @ toward >= 0 else -axis


def _toward_hand(polygons: Polygons) -> np.ndarray:
    """Direction from the forearm to the hand: forearm bones' centroid to the middle metacarpal's."""
    radius, ulna = _polygon(polygons, RADIUS), _polygon(polygons, ULNA)
    areas = np.array([abs(_signed_area(radius)), abs(_signed_area(ulna))])
    middle = (areas[0] * _centroid(radius) + areas[1] * _centroid(ulna)) / areas.sum()
    direction = _centroid(_polygon(polygons, MIDDLE_METACARPAL)) - middle
    return direction / max(float(np.linalg.norm(direction)), 1e-9)


def _forearm_frame(polygons: Polygons) -> tuple[np.ndarray, np.ndarray]:
    """(forearm axis toward the hand, unit lateral vector from the radius toward the ulna).

    The axis averages the radius and ulna midlines, each weighted by its length in the picture."""
    toward = _toward_hand(polygons)
    axes, weights = [], []
    for name in (RADIUS, ULNA):
        points = _polygon(polygons, name)
        _, axis = _oriented_axis(points, toward)
        extent = (points @ axis).max() - (points @ axis).min()
        axes.append(axis)
        weights.append(extent)
    forearm = np.average(np.array(axes), axis=0, weights=weights)
    forearm /= np.linalg.norm(forearm)
    radius_to_ulna = _centroid(_polygon(polygons, ULNA)) - _centroid(_polygon(polygons, RADIUS))
    lateral = radius_to_ulna - (radius_to_ulna @ forearm) * forearm
    norm = float(np.linalg.norm(lateral))
    if norm < 1e-9:
        raise WristGeometryError("radius and ulna lie on one line along the forearm; no side to tell")
    return forearm, lateral / norm
