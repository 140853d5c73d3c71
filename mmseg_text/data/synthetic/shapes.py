"""A tiny non-hand dataset ("shapes") in exactly the real on-disk layout, for end-to-end tests.

The package must work for any class catalogue, not only the 29 hand bones: nothing in reading,
training, prediction or evaluation may assume hand names, 29 channels, or a side / wrist angle.
This writes a second anatomy that shares nothing with the hand but the file format: each class is a
polygon of its own kind (disc, square, triangle, ...) drawn bright on a dark noisy background at a
seeded random position and scale, overlaps allowed (multi-label), so a tiny network learns it in a
few dozen steps. The test split has JSONs too, so evaluation can score it. Its catalogue
(ROOT/shapes.yaml) has no ``derived:`` section: there is no hand side or wrist angle to derive.
Same seed -> same bytes.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mmseg_text.data.synthetic.plan import ImageSpec, plan_dataset
from mmseg_text.data.synthetic.writer import annotation_document, image_paths
from mmseg_text.io import atomic_write_bytes, atomic_write_text

CATALOGUE_FILE = "shapes.yaml"
SHAPES_META_FILE = "meta_data.csv"
# (name, group, description, polygon in unit coordinates around the origin, radius ~1)
_T = np.linspace(0, 2 * np.pi, 48, endpoint=False)
_ARC = np.linspace(0.2 * np.pi, 1.3 * np.pi, 24)


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    a = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(a), np.sin(a)], 1)


SHAPES = (
    ("disc", "round", "a filled round disc", np.stack([np.cos(_T), np.sin(_T)], 1)),
    ("square", "angular", "a filled square turned at a random angle", _regular(4, np.pi / 4)),
    ("triangle", "angular", "a filled triangle with three sharp corners", _regular(3, -np.pi / 2)),
    ("ring-segment", "round", "a thick curved arc cut from a ring",
     np.concatenate([np.stack([np.cos(_ARC), np.sin(_ARC)], 1),
                     0.5 * np.stack([np.cos(_ARC[::-1]), np.sin(_ARC[::-1])], 1)])),
    ("bar", "angular", "a long thin straight bar", np.array([[-1, -0.25], [1, -0.25], [1, 0.25], [-1, 0.25]])),
    ("star", "angular", "a five-pointed star",
     _regular(10, -np.pi / 2) * np.where(np.arange(10) % 2 == 0, 1.0, 0.45)[:, None]),
    ("ellipse", "round", "a flat oval, twice as long as it is wide", np.stack([np.cos(_T), 0.5 * np.sin(_T)], 1)),
    ("hexagon", "angular", "a regular six-sided plate", _regular(6)),
)


def shapes_catalogue_text(num_classes: int) -> str:
    """The class catalogue YAML, same format as the hand's, without a ``derived:`` section."""
    lines = ["# Class catalogue of the synthetic 'shapes' anatomy (mmseg_text.data.synthetic.shapes).",
             "# group: round | angular. Not a hand: no derived side / wrist angle.", "name: shapes", "classes:"]
    lines += [f'  - {{name: {name}, group: {group}, description: "{text}"}}'
              for name, group, text, _ in SHAPES[:num_classes]]
    return "\n".join(lines) + "\n"


def _place(rng: np.random.Generator, num_classes: int, size: int) -> dict[str, np.ndarray]:
    """One polygon per class at a random position, scale and angle; centres kept apart enough
    that overlaps stay partial (no shape swallowed by another)."""
    polygons, placed = {}, []
    for name, _, _, unit in SHAPES[:num_classes]:
        radius = size * rng.uniform(0.10, 0.17)
        for _ in range(30):
            centre = rng.uniform(radius + 1, size - 2 - radius, 2)
            if all(np.hypot(*(centre - c)) >= 0.6 * (radius + r) for c, r in placed):
                break
        placed.append((centre, radius))
        angle = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = centre + radius * unit @ rot.T
        polygons[name] = np.round(np.clip(points, 0, size - 1), 2)
    return polygons


def _render(spec: ImageSpec, num_classes: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(spec.seed)
    polygons = _place(rng, num_classes, size)
    image = 20.0 + rng.normal(0.0, 6.0, (size, size))  # dark, noisy background
    for k, points in enumerate(polygons.values()):  # additive: an overlap shows both shapes
        layer = np.zeros((size, size), np.uint8)
        cv2.fillPoly(layer, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        image += layer * (130.0 + 90.0 * k / max(num_classes - 1, 1))
    image += rng.normal(0.0, 4.0, (size, size))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), polygons


def write_shapes_dataset(root: str | Path, *, ids: int = 6, size: int = 96, num_classes: int = 5, seed: int = 0,
                         test_ids: int = 2) -> Path:
    """Write ``ids`` people (two images each, ``test_ids`` of them in the test split, interleaved),
    their JSONs, ROOT/meta_data.csv and ROOT/shapes.yaml under ``root``; return ``root``."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be 1..{len(SHAPES)}, got {num_classes}")
    if not 0 <= test_ids < ids:
        raise ValueError(f"test_ids must be 0..ids-1 (at least one train person), got {test_ids} of {ids}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    root = Path(root)
    plan = plan_dataset(ids, seed)  # people, metadata and unique 13-digit time stamps
    test = {round((k + 1) * ids / test_ids) for k in range(test_ids)}  # e.g. 6 ids, 2 test -> ID003, ID006
    names = [name for name, *_ in SHAPES[:num_classes]]
    for spec in plan.images:
        spec = replace(spec, split="test" if spec.person.person_id in test else "train", suffix="",
                       seed=(seed, spec.person.person_id, 5, int(spec.seed[-1])))
        image, polygons = _render(spec, num_classes, size)
        png_path, json_path = image_paths(root, spec)
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {png_path}")
        atomic_write_bytes(png_path, encoded.tobytes())
        atomic_write_text(json_path, json.dumps(annotation_document(spec, polygons, names), ensure_ascii=False))
    for split in ("train", "test"):
        for folder in ("DCM", "outputs_json"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
    meta = pd.DataFrame([(p.person_id, p.age, p.sex, p.weight, p.height) for p in plan.people],
                        columns=["ID", "age", "sex", "weight", "height"])
    atomic_write_text(root / SHAPES_META_FILE, meta.to_csv(index=False))
    atomic_write_text(root / CATALOGUE_FILE, shapes_catalogue_text(num_classes))
    return root
