"""Drawing one planned image: place the hand on the detector, expose, burn in lead markers.

:func:`render_image` is a pure function of an :class:`~mmseg_text.data.synthetic.plan.ImageSpec` and the
image size: every random draw comes from a generator seeded by the spec, in a fixed order, so the same
spec always gives the same bytes (and images can be drawn in any order, by any number of processes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mmseg_text.data.synthetic.anatomy import _MU, _body, _hand_in_mm, _unlabelled_bones
from mmseg_text.data.synthetic.attenuation import _bone_attenuation, _smooth_noise, _soft_tissue_mm
from mmseg_text.data.synthetic.bones import Affine, Bone, _affine, _turn
from mmseg_text.data.synthetic.plan import ImageSpec
from mmseg_text.data.synthetic.polygons import annotation_polygon

# ----------------------------------------------------------------------------- imaging constants
_FOV_MM = 290.0        # detector width across the image at zoom 1 (a large hand still fits)
_MARGIN = 0.035        # free border around the hand, fraction of the image
# --degrade L (the metadata study's dose-response): the image says less about the bones as L grows, the masks
# and metadata stay the truth. Bone attenuation fades (the hand's soft-tissue silhouette stays), the picture
# blurs (sigma a fraction of the image side: the same at 512 and 2048) and gains noise. Bone-edge CNR
# (contrast.py), 512 px, mean of 6 images: L 0 / 0.25 / 0.5 / 0.75 / 1 -> 28.7 / 20.6 / 8.2 / 3.2 / 0.6.
DEGRADE_BONE_FADE = 0.97   # bone attenuation x (1 - 0.97 L) before exposure
DEGRADE_BLUR = 0.004       # Gaussian sigma, fraction of the image side, at L = 1 (2 px at 512)
DEGRADE_NOISE = 0.06       # white-noise std at L = 1 (intensity in [0, 1]; 15 of 255)
DEGRADE_SEED = 7           # the degradation's generator: the spec's seed + this, apart from the image's draws
# What fades (--fade): "bones" keeps the soft-tissue silhouette, which still shows where the hand lies, how big it
# is and which side it is; "hand" fades bones, soft tissue and the lead side letter together by (1 - L), so at
# L = 1 the image holds no anatomy at all (exposure floor, heel ramp, noise) and only the metadata (side, wrist
# angle, the size set by height and sex) says anything about the masks: the control rewards metadata by construction.
FADES = ("bones", "hand")


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


def _window_top(att: np.ndarray) -> float:
    """The attenuation the exposure maps near white: the 99th percentile inside the hand."""
    sample = att[::4, ::4]
    return float(np.percentile(sample[sample > 0], 99.0)) if (sample > 0).any() else 1.0


def _expose(att: np.ndarray, px_per_mm: float, rng: np.random.Generator, top: float) -> np.ndarray:
    """Log-domain radiograph in [0, 1]: window and gamma (exposure/contrast), heel-effect gradient,
    edge enhancement as in clinical processing, a little blur and noise. ``top``: see :func:`_window_top`."""
    size = att.shape[0]
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


def check_degrade(degrade: float) -> float:
    """The level as a float, or a ValueError naming the option (NaN is refused too)."""
    if not 0.0 <= float(degrade) <= 1.0:
        raise ValueError(f"degrade (--degrade) must be in [0, 1], got {degrade}")
    return float(degrade)


def check_fade(fade: str) -> str:
    """``fade`` itself, or a ValueError naming the option and the choices."""
    if fade not in FADES:
        raise ValueError(f"fade (--fade) must be one of {list(FADES)}, got {fade!r}")
    return fade


def _degrade(image: np.ndarray, level: float, spec: ImageSpec) -> np.ndarray:
    """Blur and noise growing with ``level``, from a generator of its own: the other draws stay as at level 0."""
    size = image.shape[0]
    rng = np.random.default_rng(list(spec.seed) + [DEGRADE_SEED])
    image = cv2.GaussianBlur(image, (0, 0), DEGRADE_BLUR * level * size)
    return image + DEGRADE_NOISE * level * rng.standard_normal(image.shape).astype(np.float32)


def _burn_markers(image: np.ndarray, spec: ImageSpec, occupied: np.ndarray, rng: np.random.Generator,
                  strength: float = 1.0) -> None:
    """Lead letters and stray text as they appear on real films: a side letter in an empty corner,
    sometimes a second label. Bright because lead stops the beam; ``strength`` < 1 fades them (``fade="hand"``)."""
    size = image.shape[0]
    corners = _empty_corners(occupied)
    if rng.random() < 0.85:
        letter = "R" if spec.side == "right" else "L"
        _put_text(image, letter, corners[0], size * rng.uniform(0.0018, 0.0026), rng, strength)
    if rng.random() < 0.35 and len(corners) > 1:
        text = str(rng.choice(["UNIST", "PA", "2022.08", "HAND", str(spec.person.person_id)]))
        _put_text(image, text, corners[1], size * rng.uniform(0.0007, 0.001), rng, strength)


def _empty_corners(occupied: np.ndarray) -> list[tuple[int, int]]:
    """Top-left anchors of the four corner boxes, emptiest (least hand) first."""
    size = occupied.shape[0]
    box = size // 5
    anchors = [(0, 0), (size - box, 0), (0, size - box), (size - box, size - box)]
    load = [float(occupied[y:y + box, x:x + box].mean()) for x, y in anchors]
    order = np.argsort(load, kind="stable")
    return [anchors[i] for i in order]


def _put_text(image: np.ndarray, text: str, anchor: tuple[int, int], scale: float, rng: np.random.Generator,
              strength: float = 1.0) -> None:
    size = image.shape[0]
    thickness = max(1, int(round(scale * 2.2)))
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    box = size // 5
    x = anchor[0] + int(rng.uniform(0.1, 0.9) * max(box - w, 1))
    y = anchor[1] + h + int(rng.uniform(0.1, 0.9) * max(box - h, 1))
    ink = np.zeros(image.shape, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(ink, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, 255, thickness, cv2.LINE_AA)
    alpha = ink.astype(np.float32) / 255
    if strength != 1.0:
        alpha *= strength
    image *= 1 - alpha
    image += alpha * float(rng.uniform(0.85, 1.0))


@dataclass(frozen=True)
class RenderedImage:
    image: np.ndarray                 # (S, S) uint8
    polygons: dict[str, np.ndarray]   # label -> (N, 2) int pixel polygon


def render_image(spec: ImageSpec, size: int, degrade: float = 0.0, fade: str = "bones") -> RenderedImage:
    """Draw one planned image; a pure function of ``spec``, ``size``, ``degrade`` and ``fade`` (same input, same bytes).

    ``degrade`` in [0, 1] fades the bones (``fade="hand"``: the soft tissue and markers too, see ``FADES``) and
    adds blur and noise (0: the plain image, bit for bit, whatever ``fade``); the polygons do not change. The
    exposure window stays the plain image's, and the degradation draws from a generator of its own, so the
    anatomy, placement, exposure and markers are those of level 0."""
    degrade, fade = check_degrade(degrade), check_fade(fade)
    rng = np.random.default_rng(list(spec.seed))
    body = _body(spec.person, rng)
    bones_mm = _hand_in_mm(body, spec.wrist_angle_deg, rng)
    to_px, px_per_mm = _place(bones_mm, spec, size, 45.0 * body.length_scale, rng)
    bones = [bone.transformed(to_px) for bone in bones_mm]
    extras = [bone.transformed(to_px) for bone in _unlabelled_bones(bones_mm, body)]
    soft = _soft_tissue_mm({bone.name: bone for bone in bones}, size, px_per_mm, body)
    tissue = _MU["soft"] * soft
    bone = _bone_attenuation(bones + extras, size, px_per_mm, body, rng)
    top = _window_top(tissue + bone)  # the plain image's window: faded bones are not stretched back to white
    keep = 1.0
    if degrade > 0 and fade == "bones":
        bone = bone * (1 - DEGRADE_BONE_FADE * degrade)
    elif degrade > 0:
        keep = 1.0 - degrade
        bone, tissue = bone * keep, tissue * keep
    image = _expose(tissue + bone, px_per_mm, rng, top)
    if degrade > 0:
        image = _degrade(image, degrade, spec)
    _burn_markers(image, spec, soft > 0, rng, keep)
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    polygons = {bone.name: annotation_polygon(bone.outline(), size) for bone in bones}
    return RenderedImage(pixels, polygons)
