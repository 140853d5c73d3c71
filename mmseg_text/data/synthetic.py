"""Procedural hand radiographs written in the real on-disk format (see REFERENCE.md).

The real X-rays are private, so the reader, masks, captions, training and evaluation are exercised on
pictures drawn here: 29 bones along five rays with adult bone lengths, eight carpals with their real
overlaps (Trapezium/Trapezoid, Triquetrum/Pisiform), the distal radius and ulna, soft tissue, exposure
and noise. The person's metadata drives the picture (height and sex -> hand size and bone width, weight
-> soft tissue, age -> bone density and cortex), so a metadata-conditioned model has something to learn.

Geometry is built in a *hand frame* in millimetres: x points toward the ulna (little-finger side),
u toward the fingertips, origin at the radiocarpal joint. Angles are degrees and positive when they
turn +u toward +x, i.e. toward the ulna, which is also the sign of the wrist angle (ulnar deviation).
A right hand seen PA has its ulna on the image's right, so x maps to image +x; a left hand is mirrored.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.data.layout import person_dir_name
from mmseg_text.io import atomic_path, atomic_write_bytes, atomic_write_text

# ----------------------------------------------------------------------------- dataset plan constants
TEST_ID_SHARE = 0.27                       # share of person IDs in the test split (real: 144 of 544)
BENT_SHARE = {"train": 0.11, "test": 0.55}  # bent-wrist images per split: the real distribution shift
BENT_RANGE_DEG = (40.0, 60.0)
STRAIGHT_LIMIT_DEG = 20.0
SUFFIX_SHARE = 0.08                        # file names carrying an _R/_L suffix
TRUTH_FILE = "synthetic_truth.csv"
META_FILE = "meta_data.xlsx"
META_HEADERS = ("ID", "나이", "성별", "체중(몸무게)", "키(신장)", None)  # last column: unnamed remarks
WRONG_JSON_SIZE = {"height": 3060, "width": 3060}  # the real files state this size; it is wrong on purpose
_FIRST_TIMESTAMP_MS = 1_661_130_000_000   # 2022-08-22, as in the real file names
_TIMESTAMP_SLOT_MS = 1_200_000            # one person per 20 minutes keeps time stamps unique
_KST = timezone(timedelta(hours=9))

# ----------------------------------------------------------------------------- anatomy (mm, adult)
# Rays from the thumb to the little finger: metacarpal base (x, u), ray angle, bone lengths from the
# metacarpal to the fingertip (REFERENCE.md) and how far finger spread turns the phalanges.
_RAYS = (
    ("thumb", (-26.5, 35.0), -34.0, (46.0, 32.0, 24.0), -0.6),
    ("index", (-12.0, 35.5), -7.0, (68.0, 40.0, 23.0, 17.0), -1.0),
    ("middle", (-1.5, 39.5), 0.0, (65.0, 45.0, 27.0, 18.0), 0.0),
    ("ring", (9.5, 37.5), 7.0, (58.0, 42.0, 26.0, 18.0), 0.6),
    ("little", (18.5, 35.0), 14.0, (53.0, 33.0, 19.0, 16.0), 1.2),
)
_RAY_KINDS = {3: ("metacarpal", "proximal", "distal"), 4: ("metacarpal", "proximal", "middle", "distal")}
_MAX_SPREAD_DEG = 11.0
# Full widths (base, shaft, head) in mm and the flare lengths of base and head as fractions of length.
_BONE_SHAPES = {
    "metacarpal": (12.5, 7.6, 12.0, 0.18, 0.14),
    "proximal": (12.0, 7.6, 9.8, 0.20, 0.13),
    "middle": (10.0, 6.6, 8.2, 0.24, 0.15),
    "distal": (9.0, 4.4, 6.6, 0.26, 0.10),
}
_RAY_WIDTH = {"thumb": 1.22, "index": 1.0, "middle": 1.03, "ring": 0.94, "little": 0.86}
_JOINT_GAP_MM = {"mcp": 2.0, "ip": 1.5}
# Carpals: centre (x, u), semi-axes (along, across) of the long axis, long-axis angle, outline style.
# The proximal row rests on the slanted radius (scaphoid and lunate) and above the ulna (triquetrum);
# Trapezium/Trapezoid and Triquetrum/Pisiform overlap in a PA projection, as in the real labels.
_PROXIMAL_ROW = ("Scaphoid", "Lunate", "Triquetrum", "Pisiform")
_CARPALS = {
    "Scaphoid": ((-15.5, 10.2), (10.6, 6.0), -34.0, "waist"),
    "Lunate": ((-1.0, 7.8), (8.2, 8.0), 0.0, "crescent"),
    "Triquetrum": ((12.6, 9.6), (7.0, 6.8), 35.0, "wedge"),
    "Pisiform": ((16.2, 10.2), (5.2, 4.8), 10.0, "round"),
    "Trapezium": ((-21.5, 25.8), (8.6, 7.6), -25.0, "box"),
    "Trapezoid": ((-13.6, 27.5), (6.6, 6.0), 0.0, "box"),
    "Capitate": ((-1.5, 26.0), (12.8, 7.0), 0.0, "egg"),
    "Hamate": ((12.8, 26.0), (10.8, 7.8), 12.0, "wedge"),
}
_WRIST_PIVOT = (-1.5, 16.0)  # head of the capitate: the centre of radial/ulnar deviation
# Distal forearm: axis x, distal tip u, shaft and distal half-widths, end detail (radius: drop of the
# articular surface from the styloid tip to the ulnar corner, ~22 degrees of radial inclination;
# ulna: length of the styloid beyond the head). Depth: front-to-back thickness relative to width.
_RADIUS = {"axis_x": -11.0, "tip_u": 7.0, "half": (8.5, 15.0), "slant": 11.0}
_ULNA = {"axis_x": 14.5, "tip_u": 1.0, "half": (5.8, 8.0), "styloid": 5.0}
_FOREARM_DEPTH = 0.6
_CARPAL_DEPTH = 0.7
_FOREARM_MM = 260.0  # modelled length of radius and ulna: always longer than the image, which crops them

# ----------------------------------------------------------------------------- imaging constants
_MU = {"cortex": 0.11, "spongy": 0.05, "marrow": 0.022, "soft": 0.008}  # attenuation per mm
_FOV_MM = 290.0        # detector width across the image at zoom 1 (a large hand still fits)
_MARGIN = 0.035        # free border around the hand, fraction of the image


# =============================================================================== the plan
@dataclass(frozen=True)
class Person:
    """One row of meta_data.xlsx."""

    person_id: int
    age: int
    sex: str      # "female" | "male"
    weight: int   # kg
    height: int   # cm


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides one image; rendering it is a pure function of this and the size."""

    person: Person
    split: str               # "train" | "test"
    side: str                # "left" | "right"
    wrist_angle_deg: float   # anatomical: + = ulnar deviation, unchanged by a mirror
    bent_wrist: bool
    timestamp: int           # ms since the epoch: names the file
    suffix: str              # "" | "_R" | "_L"
    seed: tuple[int, ...]    # entropy of this image's renderer

    @property
    def image_id(self) -> str:
        return f"image{self.timestamp}{self.suffix}"


@dataclass(frozen=True)
class DatasetPlan:
    people: tuple[Person, ...]        # IDs 1..N, each with two images
    extra_people: tuple[Person, ...]  # metadata-only rows, as in the real spreadsheet
    test_ids: frozenset[int]
    images: tuple[ImageSpec, ...]


def plan_dataset(ids: int, seed: int = 0) -> DatasetPlan:
    """Who is in which split, their metadata and their two images, without drawing anything.

    Cheap, so tests can check the distributions (bent-wrist shares, sex ratio) on hundreds of IDs.
    """
    if ids < 1:
        raise ValueError(f"ids must be >= 1, got {ids}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    people = tuple(_sample_person(pid, seed) for pid in range(1, ids + 1))
    extra = tuple(_sample_person(pid, seed) for pid in range(ids + 1, ids + 1 + max(2, ids // 60)))
    test_ids = _choose_test_ids(ids, seed)
    drafts = []
    for person in people:
        split = "test" if person.person_id in test_ids else "train"
        drafts.extend(_person_images(person, split, seed))
    return DatasetPlan(people, extra, test_ids, _assign_wrist_angles(drafts, seed))


def _sample_person(person_id: int, seed: int) -> Person:
    """Age 19-69 (mean ~32), ~52 % female, height 150-187 cm, weight 42-118 kg (REFERENCE.md)."""
    rng = np.random.default_rng([seed, person_id, 1])
    male = rng.random() >= 0.52
    age = int(np.clip(round(19 + rng.gamma(1.6, 8.2)), 19, 69))
    height = int(np.clip(round(rng.normal(174, 6) if male else rng.normal(161, 5.5)), 150, 187))
    bmi = np.clip(rng.normal(24.0, 3.3) if male else rng.normal(22.0, 3.2), 16.5, 36.0)
    weight = int(np.clip(round(bmi * (height / 100) ** 2), 42, 118))
    return Person(person_id, age, "male" if male else "female", weight, height)


def _choose_test_ids(ids: int, seed: int) -> frozenset[int]:
    """About 27 % of IDs, spread among the train IDs; at least one when there are three or more."""
    if ids < 3:
        return frozenset()
    n_test = min(max(1, round(TEST_ID_SHARE * ids)), ids - 1)
    rng = np.random.default_rng([seed, 0, 1])
    return frozenset(int(i) for i in rng.choice(np.arange(1, ids + 1), size=n_test, replace=False))


def _person_images(person: Person, split: str, seed: int) -> list[ImageSpec]:
    """Both hands of one person, taken a few minutes apart (unique 13-digit time stamps)."""
    rng = np.random.default_rng([seed, person.person_id, 2])
    sides = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    first = _FIRST_TIMESTAMP_MS + person.person_id * _TIMESTAMP_SLOT_MS + int(rng.integers(0, 600_000))
    stamps = (first, first + int(rng.integers(15_000, 300_000)))
    specs = []
    for hand, (side, stamp) in enumerate(zip(sides, stamps)):
        suffix = ("_R" if side == "right" else "_L") if rng.random() < SUFFIX_SHARE else ""
        specs.append(ImageSpec(person, split, side, 0.0, False, stamp, suffix,
                               (seed, person.person_id, 3, hand)))
    return specs


def _assign_wrist_angles(drafts: list[ImageSpec], seed: int) -> tuple[ImageSpec, ...]:
    """Exactly round(share * n) bent wrists per split, so even a tiny set has the real shift."""
    rng = np.random.default_rng([seed, 0, 2])
    bent = set()
    for split, share in BENT_SHARE.items():
        members = [i for i, d in enumerate(drafts) if d.split == split]
        n_bent = min(len(members), round(share * len(members)))
        if n_bent:
            bent.update(int(i) for i in rng.choice(members, size=n_bent, replace=False))
    specs = []
    for i, draft in enumerate(drafts):
        if i in bent:
            sign = 1.0 if rng.random() < 0.8 else -1.0  # radial deviation has the smaller range
            angle = sign * rng.uniform(*BENT_RANGE_DEG)
        else:
            angle = float(np.clip(rng.normal(3.0, 8.0), -STRAIGHT_LIMIT_DEG, STRAIGHT_LIMIT_DEG))
        specs.append(replace(draft, wrist_angle_deg=round(float(angle), 2), bent_wrist=i in bent))
    return tuple(specs)


# =============================================================================== bones
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


@dataclass(frozen=True)
class _Body:
    """Anatomy of one image, from the person's metadata plus a little individual variation."""

    length_scale: float     # bone lengths and positions relative to the reference adult
    width_scale: float      # bone widths relative to the reference adult
    density: float          # bone mineral density (falls with age, faster for women)
    cortex_fraction: float  # cortical thickness / shaft radius (thins with age)
    soft_margin_mm: float   # soft tissue beyond the bones (weight)
    soft_bulk: float        # palm and forearm thickness (weight)
    spread: float           # finger abduction, 0..1


def _body(person: Person, rng: np.random.Generator) -> _Body:
    male = person.sex == "male"
    length = person.height / 170.0 * (1.045 if male else 0.965) * rng.uniform(0.97, 1.03)
    bmi = person.weight / (person.height / 100) ** 2
    width = length * (1.05 if male else 0.95) * float(np.clip(1 + 0.008 * (bmi - 22), 0.92, 1.12))
    years = max(person.age - 30, 0)
    density = float(np.clip(1.0 - (0.005 if male else 0.008) * years + rng.normal(0, 0.03), 0.6, 1.1))
    cortex = float(np.clip(0.5 - (0.003 if male else 0.0045) * years + rng.normal(0, 0.02), 0.25, 0.6))
    return _Body(length, width, density, cortex,
                 soft_margin_mm=float(np.clip(3.0 + 0.3 * (bmi - 22), 1.8, 7.0)),
                 soft_bulk=float(np.clip(1.0 + 0.05 * (bmi - 22), 0.75, 1.8)),
                 spread=float(rng.uniform(0.0, 1.0)))


def ray_bone_names() -> dict[str, list[str]]:
    """``finger-k`` names per ray, proximal to distal, from REFERENCE's rule: numbered from the thumb,
    distal phalanx first and metacarpal last (so finger-11 is the middle-finger metacarpal)."""
    names, k = {}, 1
    for ray, _, _, lengths, _ in _RAYS:
        n = len(lengths)
        names[ray] = [f"finger-{k + n - 1 - j}" for j in range(n)]
        k += n
    return names


def anatomy_bone_names() -> list[str]:
    """Every bone the generator draws (checked against the class catalogue before any drawing)."""
    return [n for names in ray_bone_names().values() for n in names] + list(_CARPALS) + ["Radius", "Ulna"]


def _sample_ends(n: int) -> np.ndarray:
    """Fractions along a bone, dense at both ends where the rounded caps are."""
    return (1 - np.cos(np.linspace(0, np.pi, n))) / 2


def _cap(distance: np.ndarray, cap_length: float) -> np.ndarray:
    """Half-ellipse rounding of a bone end: 0 at the end, 1 once ``cap_length`` inside."""
    x = np.clip(distance / max(cap_length, 1e-6), 0, 1)
    return np.sqrt(1 - (1 - x) ** 2)


def _tube(name: str, start, angle_deg: float, length: float, widths, body: _Body,
          width_factor: float) -> LongBone:
    """A finger bone: flared base and head, narrow shaft, rounded ends, hollow shaft."""
    base_w, shaft_w, head_w, flare_base, flare_head = widths
    base_w, shaft_w, head_w = (w * body.width_scale * width_factor for w in (base_w, shaft_w, head_w))
    u = _sample_ends(120)
    d0, d1 = u * length, (1 - u) * length
    end0 = np.exp(-(d0 / (flare_base * length)) ** 2)
    end1 = np.exp(-(d1 / (flare_head * length)) ** 2)
    half = shaft_w / 2 + (base_w - shaft_w) / 2 * end0 + (head_w - shaft_w) / 2 * end1
    half = half * _cap(d0, 0.3 * base_w) * _cap(d1, 0.3 * head_w)
    shaftness = 1 - np.maximum(np.exp(-(d0 / (1.4 * flare_base * length)) ** 2),
                               np.exp(-(d1 / (1.4 * flare_head * length)) ** 2))
    return _long_bone(name, start, angle_deg, length, u, -half, half, shaft_w / 2, shaftness, body)


def _long_bone(name, start, angle_deg, length, u, lo, hi, shaft_half, shaftness, body: _Body,
               depth: float = 1.0) -> LongBone:
    axis = _turn(angle_deg) @ np.array([0.0, 1.0])
    normal = _turn(angle_deg) @ np.array([1.0, 0.0])
    cortex = body.cortex_fraction * shaft_half * (0.3 + 0.7 * shaftness)
    spongy = _MU["spongy"] * body.density
    medulla = _MU["marrow"] + (spongy - _MU["marrow"]) * (1 - shaftness)
    return LongBone(name, np.asarray(start, float), axis, normal, float(length), u, lo, hi, cortex, medulla, depth)


def _radius(body: _Body) -> LongBone:
    """Distal radius: wide flared end whose articular surface slants from the radial styloid."""
    ls, ws = body.length_scale, body.width_scale
    length = _FOREARM_MM * ls
    u = _sample_ends(200)
    d = (1 - u) * length  # distance from the styloid tip
    shaft, distal = (h * ws for h in _RADIUS["half"])
    half = shaft + (distal - shaft) * np.exp(-(d / (30 * ls)) ** 2)
    slant = _RADIUS["slant"] * ls
    tip = 2.5 * ls  # the styloid tip is blunt: the radial edge curves in over its last few mm
    lo = -half + tip * (1 - _cap(d, tip))
    hi = lo + (half - lo) * np.clip(d / slant, 0, 1) ** 0.8
    shaftness = 1 - np.exp(-(d / (35 * ls)) ** 2)
    start = (_RADIUS["axis_x"] * ls, _RADIUS["tip_u"] * ls - length)
    return _long_bone("Radius", start, 0.0, length, u, lo, hi, shaft, shaftness, body, _FOREARM_DEPTH)


def _ulna(body: _Body) -> LongBone:
    """Distal ulna: rounded head at the radius' level with the styloid tip on the ulnar edge."""
    ls, ws = body.length_scale, body.width_scale
    length = _FOREARM_MM * ls
    u = _sample_ends(200)
    d = (1 - u) * length  # distance from the styloid tip
    styloid = _ULNA["styloid"] * ls
    shaft, head = (h * ws for h in _ULNA["half"])
    half = shaft + (head - shaft) * np.exp(-(np.maximum(d - styloid, 0) / (18 * ls)) ** 2)
    hi = half.copy()
    lo = np.where(d < styloid, hi - half * np.clip(d / styloid, 0, 1) ** 1.6,
                  -half * _cap(d - styloid, 0.5 * head))
    shaftness = 1 - np.exp(-(d / (28 * ls)) ** 2)
    start = (_ULNA["axis_x"] * ls, _ULNA["tip_u"] * ls - length)
    return _long_bone("Ulna", start, 0.0, length, u, lo, hi, shaft, shaftness, body, _FOREARM_DEPTH)


def _carpal(name: str, body: _Body, rng: np.random.Generator) -> BlobBone:
    """A carpal outline: an ellipse bent into its bone's typical shape, with a little individual wobble."""
    (cx, cu), (along, across), angle, style = _CARPALS[name]
    along, across = along * body.length_scale, across * body.width_scale
    phi = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    a, b = np.sin(phi), np.cos(phi)  # unit position along and across the long axis
    if style == "box":
        a, b = np.sign(a) * np.abs(a) ** 0.6, np.sign(b) * np.abs(b) ** 0.6
    wobble = 1 + sum(rng.normal(0, 0.025) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3))
    if style == "wedge":
        wobble = wobble * (1 + 0.12 * np.cos(3 * phi))
    pa, pb = a * along * wobble, b * across * wobble
    if style == "crescent":   # concave distal facet where the capitate head sits
        pa = pa - 0.4 * along * (1 - b ** 2) * np.clip(a, 0, None)
    elif style == "waist":    # the scaphoid's waist and gentle curve
        pb = pb * (1 - 0.18 * np.cos(phi) ** 2) + 0.12 * across * a ** 2
    elif style == "egg":      # capitate: round proximal head, broader distal body
        pb = pb * (1 + 0.12 * a)
    local = np.stack([pb, pa], axis=1)
    polygon = local @ _turn(angle).T + np.array([cx, cu]) * body.length_scale
    return BlobBone(name, polygon, cortex=1.6 * body.cortex_fraction)  # ~0.8 mm in a young adult


def _rays(body: _Body, rng: np.random.Generator) -> list[LongBone]:
    """Metacarpals and phalanges along the five rays, with joint gaps and finger spread."""
    ls = body.length_scale
    names = ray_bone_names()
    bones = []
    for ray, base, ray_angle, lengths, spread_weight in _RAYS:
        kinds = _RAY_KINDS[len(lengths)]
        position = np.array(base) * ls
        angle = ray_angle + (spread_weight * body.spread * _MAX_SPREAD_DEG if ray == "thumb" else 0.0)
        for j, (kind, length, name) in enumerate(zip(kinds, lengths, names[ray])):
            if j == 1:  # metacarpophalangeal joint: fingers spread here
                angle += spread_weight * body.spread * _MAX_SPREAD_DEG + rng.normal(0, 1.5)
            elif j > 1:
                angle += rng.normal(0, 1.5)
            bone = _tube(name, position, angle, length * ls, _BONE_SHAPES[kind], body, _RAY_WIDTH[ray])
            bones.append(bone)
            gap = _JOINT_GAP_MM["mcp" if j == 0 else "ip"] * ls
            position = position + bone.axis * (bone.length + gap)
    return bones


def _hand_in_mm(body: _Body, wrist_angle_deg: float, rng: np.random.Generator) -> list[Bone]:
    """All 29 bones in the hand frame with the wrist deviated: the distal row and the fingers turn by the
    full angle about the capitate head, the proximal row by half of it (it slides between them)."""
    pivot = np.array(_WRIST_PIVOT) * body.length_scale
    distal = _turn_about(wrist_angle_deg, pivot)
    proximal = _turn_about(wrist_angle_deg / 2, pivot)
    bones: list[Bone] = [b.transformed(distal) for b in _rays(body, rng)]
    for name in _CARPALS:
        carpal = _carpal(name, body, rng)
        bones.append(carpal.transformed(proximal if name in _PROXIMAL_ROW else distal))
    return bones + [_radius(body), _ulna(body)]


def _ellipse(centre, semi_x: float, semi_u: float, n: int = 40) -> np.ndarray:
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.asarray(centre) + np.stack([semi_x * np.cos(phi), semi_u * np.sin(phi)], axis=1)


def _unlabelled_bones(bones: list[Bone], body: _Body) -> list[BlobBone]:
    """Details a reader of hand films expects but the labels ignore: the two sesamoids at the thumb's
    metacarpophalangeal joint and the ring-like hook of the hamate."""
    by_name = {bone.name: bone for bone in bones}
    thumb = by_name[ray_bone_names()["thumb"][0]]
    ls, ws = body.length_scale, body.width_scale
    head = thumb.start + thumb.axis * (thumb.length - 3.0 * ls)
    extras = [BlobBone("sesamoid", _ellipse(head + side * 3.4 * ws * thumb.normal, 2.4 * ws, 2.0 * ls), 0.5)
              for side in (-1.0, 1.0)]
    hamate, capitate = by_name["Hamate"].outline().mean(0), by_name["Capitate"].outline().mean(0)
    hook = hamate + 0.2 * (capitate - hamate)
    extras.append(BlobBone("hamate hook", _ellipse(hook, 2.6 * ws, 3.2 * ls), 0.9, core=0.2))
    return extras


# =============================================================================== placing in the image
def _place(bones_mm: list[Bone], spec: ImageSpec, size: int, forearm_mm: float,
           rng: np.random.Generator) -> tuple[Affine, float]:
    """mm -> pixel transform: tilt the forearm, mirror left hands, scale to the detector, fit the hand.

    A bent wrist is shared between a tilted forearm and a tilted hand, so the hand stays in the picture;
    ``forearm_mm`` of forearm is kept inside the image so the forearm axis is measurable.
    """
    angle = spec.wrist_angle_deg
    share = rng.uniform(0.25, 0.5) if spec.bent_wrist else rng.uniform(0.0, 0.4)
    tilt = -share * angle + rng.normal(0, 3.0)
    mirror = 1.0 if spec.side == "right" else -1.0
    linear = np.diag([mirror, -1.0]) @ _turn(tilt)
    keep = []
    for bone in bones_mm:
        points = bone.outline()
        if bone.name in ("Radius", "Ulna"):
            points = points[points[:, 1] > -forearm_mm]
        keep.append(points)
    points = np.concatenate(keep) @ linear.T
    low, high = points.min(0), points.max(0)
    room = size * (1 - 2 * _MARGIN)
    scale = min(size / _FOV_MM * rng.uniform(0.94, 1.04), room / (high - low).max())
    slack = room - (high - low) * scale
    offset = _MARGIN * size + slack * np.array([rng.uniform(0.25, 0.75), rng.uniform(0.0, 0.35)]) - low * scale
    return _affine(scale * linear, offset), scale


# =============================================================================== drawing
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


def _expose(att: np.ndarray, px_per_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Log-domain radiograph in [0, 1]: window and gamma (exposure/contrast), heel-effect gradient,
    edge enhancement as in clinical processing, a little blur and noise."""
    size = att.shape[0]
    sample = att[::4, ::4]
    top = float(np.percentile(sample[sample > 0], 99.0)) if (sample > 0).any() else 1.0
    knee = rng.uniform(0.6, 1.4)  # film-like shoulder: dense bone compresses instead of clipping
    image = (1 - np.exp(-knee * att / top)) / (1 - math.exp(-knee))
    image = np.clip(image, 0, 1) ** rng.uniform(0.85, 1.2)
    floor = rng.uniform(0.02, 0.1)
    image = floor + (0.97 - floor) * image
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    image = image * (1 + rng.uniform(-0.08, 0.08) * ramp[:, None] + rng.uniform(-0.04, 0.04) * ramp[None, :])
    detail = image - cv2.GaussianBlur(image, (0, 0), 1.5 * px_per_mm)
    image = image + rng.uniform(0.2, 0.5) * detail
    if px_per_mm > 2:
        image = cv2.GaussianBlur(image, (0, 0), 0.12 * px_per_mm)
    noise = rng.uniform(0.008, 0.02) * rng.standard_normal((size, size)).astype(np.float32)
    mottle = 0.01 * _smooth_noise(size, 3.0 * px_per_mm, rng)
    return image + noise + mottle


def _burn_markers(image: np.ndarray, spec: ImageSpec, occupied: np.ndarray, rng: np.random.Generator) -> None:
    """Lead letters and stray text as they appear on real films: a side letter in an empty corner,
    sometimes a second label. Bright because lead stops the beam."""
    size = image.shape[0]
    corners = _empty_corners(occupied)
    if rng.random() < 0.85:
        letter = "R" if spec.side == "right" else "L"
        _put_text(image, letter, corners[0], size * rng.uniform(0.0018, 0.0026), rng)
    if rng.random() < 0.35 and len(corners) > 1:
        text = str(rng.choice(["UNIST", "PA", "2022.08", "HAND", str(spec.person.person_id)]))
        _put_text(image, text, corners[1], size * rng.uniform(0.0007, 0.001), rng)


def _empty_corners(occupied: np.ndarray) -> list[tuple[int, int]]:
    """Top-left anchors of the four corner boxes, emptiest (least hand) first."""
    size = occupied.shape[0]
    box = size // 5
    anchors = [(0, 0), (size - box, 0), (0, size - box), (size - box, size - box)]
    load = [float(occupied[y:y + box, x:x + box].mean()) for x, y in anchors]
    order = np.argsort(load, kind="stable")
    return [anchors[i] for i in order]


def _put_text(image: np.ndarray, text: str, anchor: tuple[int, int], scale: float, rng: np.random.Generator) -> None:
    size = image.shape[0]
    thickness = max(1, int(round(scale * 2.2)))
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    box = size // 5
    x = anchor[0] + int(rng.uniform(0.1, 0.9) * max(box - w, 1))
    y = anchor[1] + h + int(rng.uniform(0.1, 0.9) * max(box - h, 1))
    ink = np.zeros(image.shape, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(ink, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, 255, thickness, cv2.LINE_AA)
    alpha = ink.astype(np.float32) / 255
    image *= 1 - alpha
    image += alpha * float(rng.uniform(0.85, 1.0))


# =============================================================================== polygons
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


# =============================================================================== one image
@dataclass(frozen=True)
class RenderedImage:
    image: np.ndarray                 # (S, S) uint8
    polygons: dict[str, np.ndarray]   # label -> (N, 2) int pixel polygon


def render_image(spec: ImageSpec, size: int) -> RenderedImage:
    """Draw one planned image; a pure function of ``spec`` and ``size`` (same input, same bytes)."""
    rng = np.random.default_rng(list(spec.seed))
    body = _body(spec.person, rng)
    bones_mm = _hand_in_mm(body, spec.wrist_angle_deg, rng)
    to_px, px_per_mm = _place(bones_mm, spec, size, 45.0 * body.length_scale, rng)
    bones = [bone.transformed(to_px) for bone in bones_mm]
    extras = [bone.transformed(to_px) for bone in _unlabelled_bones(bones_mm, body)]
    soft = _soft_tissue_mm({bone.name: bone for bone in bones}, size, px_per_mm, body)
    att = _MU["soft"] * soft + _bone_attenuation(bones + extras, size, px_per_mm, body, rng)
    image = _expose(att, px_per_mm, rng)
    _burn_markers(image, spec, soft > 0, rng)
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    polygons = {bone.name: annotation_polygon(bone.outline(), size) for bone in bones}
    return RenderedImage(pixels, polygons)


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def annotation_document(spec: ImageSpec, polygons: dict[str, np.ndarray], class_names) -> dict:
    """The real JSON schema, quirks included: ``.jpg`` file name and a wrong ``metadata`` size."""
    rng = np.random.default_rng([*spec.seed, 7])
    day = datetime.fromtimestamp(spec.timestamp / 1000, tz=_KST).strftime("%Y%m%d")
    annotations = [{"id": f"{int(rng.integers(1, 100))}-{_uuid(rng)}", "type": "poly_seg", "attributes": {},
                    "points": polygons[name].tolist(), "label": name} for name in class_names]
    return {
        "annotations": annotations,
        "attributes": {},
        "file_id": _uuid(rng),
        "filename": f"{spec.image_id}.jpg",
        "parent_path": f"/X-ray_UNIST/{day}/{person_dir_name(spec.person.person_id)}",
        "last_modifier_id": _uuid(rng),
        "metadata": dict(WRONG_JSON_SIZE),
        "last_workers": {},
    }


def image_paths(root: Path, spec: ImageSpec) -> tuple[Path, Path]:
    person = person_dir_name(spec.person.person_id)
    return (root / spec.split / "DCM" / person / f"{spec.image_id}.png",
            root / spec.split / "outputs_json" / person / f"{spec.image_id}.json")


def _write_image(task: tuple[Path, ImageSpec, int, tuple[str, ...]]) -> str:
    root, spec, size, class_names = task
    rendered = render_image(spec, size)
    png_path, json_path = image_paths(root, spec)
    ok, encoded = cv2.imencode(".png", rendered.image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {png_path}")
    atomic_write_bytes(png_path, encoded.tobytes())
    # One line, as the real files: an indented JSON of dense polygons is several times larger.
    document = annotation_document(spec, rendered.polygons, class_names)
    atomic_write_text(json_path, json.dumps(document, ensure_ascii=False))
    return spec.image_id


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; nested OpenCV threads only oversubscribe the cores


# =============================================================================== the whole dataset
def check_catalogue(catalogue: ClassCatalogue) -> None:
    """The generator draws a fixed anatomy; refuse a catalogue whose classes it cannot draw."""
    drawn, wanted = set(anatomy_bone_names()), set(catalogue.names)
    if drawn != wanted:
        raise ValueError(f"synthetic generator draws {sorted(drawn - wanted)} not in {catalogue.source}, "
                         f"and cannot draw {sorted(wanted - drawn)}")


def generate_dataset(out: str | Path, *, ids: int, size: int = 2048, seed: int = 0, workers: int = 1,
                     progress: bool = True, skip_existing: bool = False,
                     catalogue: Optional[ClassCatalogue] = None) -> dict:
    """Write a synthetic dataset in the real layout under ``out`` and return a short summary.

    ``skip_existing`` keeps images whose PNG and JSON are already there (same seed -> same files).
    The metadata spreadsheet and ``synthetic_truth.csv`` are always rewritten.
    """
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    catalogue = catalogue or load_catalogue()
    check_catalogue(catalogue)
    started = time.perf_counter()
    root = Path(out)
    plan = plan_dataset(ids, seed)
    todo = [spec for spec in plan.images
            if not (skip_existing and all(p.exists() for p in image_paths(root, spec)))]
    tasks = [(root, spec, size, tuple(catalogue.names)) for spec in todo]
    _run_tasks(tasks, workers, progress)
    for split in ("train", "test"):
        (root / split / "DCM").mkdir(parents=True, exist_ok=True)
        (root / split / "outputs_json").mkdir(parents=True, exist_ok=True)
    write_metadata_xlsx(root / META_FILE, plan, seed)
    atomic_write_text(root / TRUTH_FILE, truth_frame(plan).to_csv(index=False))
    return _summary(root, plan, size, seed, written=len(todo), seconds=time.perf_counter() - started)


def _run_tasks(tasks: list, workers: int, progress: bool) -> None:
    bar = tqdm(total=len(tasks), desc="synthetic", unit="img", disable=not progress or not tasks)
    with bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                _write_image(task)
                bar.update()
            return
        # spawn, not fork: forking a process whose OpenCV/torch thread pools already ran can deadlock.
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_write_image, tasks):
                bar.update()


def truth_frame(plan: DatasetPlan) -> pd.DataFrame:
    """What the generator knows and a reader must recover: side and wrist angle per image."""
    rows = [{"image_id": s.image_id, "person_id": s.person.person_id, "split": s.split, "side": s.side,
             "wrist_angle_deg": s.wrist_angle_deg, "bent_wrist": s.bent_wrist} for s in plan.images]
    return pd.DataFrame(rows, columns=["image_id", "person_id", "split", "side", "wrist_angle_deg", "bent_wrist"])


def _sex_cells(people: tuple[Person, ...], rng: np.random.Generator) -> list[str]:
    """Korean sex values with the real file's noise: stray leading spaces and an Excel-escaped
    backspace before the word. The first two rows always carry one quirk each, so a reader that
    does not normalise them fails even on a tiny set."""
    cells = []
    for row, person in enumerate(people):
        word = "남" if person.sex == "male" else "여"
        quirk = ("escape", "space")[row] if row < 2 else rng.choice(["", "", "", "", "escape", "space"])
        if quirk == "escape":
            word = "_x0008_" + word
        elif quirk == "space":
            word = " " * int(rng.integers(1, 3)) + word
        cells.append(word)
    return cells


def write_metadata_xlsx(path: Path, plan: DatasetPlan, seed: int) -> None:
    """meta_data.xlsx with the Korean headers, one row per ID (plus metadata-only IDs), an unnamed
    remarks column that is empty but for one nail-polish note, and quirky sex values."""
    import openpyxl  # only needed here

    rng = np.random.default_rng([seed, 0, 3])
    people = plan.people + plan.extra_people
    cells = _sex_cells(people, rng)
    remark_row = len(people) // 2
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(META_HEADERS))
    for i, (person, sex) in enumerate(zip(people, cells)):
        remark = "매니큐어 착용 (nail polish)" if i == remark_row else None
        sheet.append([person.person_id, person.age, sex, person.weight, person.height, remark])
    with atomic_path(path) as tmp:
        book.save(tmp)


def _summary(root: Path, plan: DatasetPlan, size: int, seed: int, *, written: int, seconds: float) -> dict:
    counts = {split: sum(s.split == split for s in plan.images) for split in ("train", "test")}
    bent = {split: sum(s.split == split and s.bent_wrist for s in plan.images) for split in ("train", "test")}
    return {"out": str(root), "size": size, "seed": seed, "ids": len(plan.people),
            "test_ids": len(plan.test_ids), "images": counts, "bent_wrist": bent,
            "written": written, "skipped": len(plan.images) - written, "seconds": round(seconds, 2)}
