"""The hand's bones in millimetres, built from a person's metadata.

Height and sex set hand size and bone width, weight sets soft tissue, age sets bone density and cortex
(:func:`_body`); the rays, carpals and distal forearm are then laid out in the hand frame with the
wrist deviated. Adult bone lengths and the real carpal overlaps (Trapezium/Trapezoid,
Triquetrum/Pisiform) follow REFERENCE.md. Nothing here knows about pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmseg_text.data.synthetic.bones import BlobBone, Bone, LongBone, _turn, _turn_about
from mmseg_text.data.synthetic.plan import Person

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
# Attenuation per mm of each tissue: bone density scales the bone values here, the renderer uses the rest.
_MU = {"cortex": 0.11, "spongy": 0.05, "marrow": 0.022, "soft": 0.008}  # attenuation per mm


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
