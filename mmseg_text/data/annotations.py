"""Read one annotation JSON of the real format into ``{label: (N, 2) float polygon}``.

The file's ``metadata`` size and ``filename`` are known to be wrong (REFERENCE.md) and are not read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import numpy as np


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file and the entry."""


def load_annotation(path: str | Path, *, known_labels: Optional[Iterable[str]] = None,
                    image_size: Optional[tuple[int, int]] = None) -> dict[str, np.ndarray]:
    """Polygons by label. Raises AnnotationError naming the file for bad JSON, unknown labels,
    polygons of fewer than 3 points, or points outside ``image_size`` (H, W) when given."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{path}: cannot parse JSON ({err})") from None
    entries = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise AnnotationError(f"{path}: missing 'annotations' list")
    known = set(known_labels) if known_labels is not None else None
    polygons: dict[str, np.ndarray] = {}
    for i, entry in enumerate(entries):
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(label, str):
            raise AnnotationError(f"{path}: annotations[{i}] has no 'label'")
        if known is not None and label not in known:
            raise AnnotationError(f"{path}: annotations[{i}] has unknown label {label!r}")
        try:
            points = np.asarray(entry.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: annotations[{i}] ({label}) has non-numeric points") from None
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise AnnotationError(f"{path}: annotations[{i}] ({label}) is not a polygon of >= 3 [x, y] points")
        if image_size is not None:
            h, w = image_size
            if points.min() < 0 or (points[:, 0] > w - 1).any() or (points[:, 1] > h - 1).any():
                raise AnnotationError(f"{path}: annotations[{i}] ({label}) has points outside the {w}x{h} image")
        if label in polygons:
            raise AnnotationError(f"{path}: label {label!r} appears twice")
        polygons[label] = points
    return polygons
