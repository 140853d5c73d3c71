"""What is known of one image besides its pixels: the hand side and the caption's facts, in one place.

A horizontal flip turns a left hand into a right one, so the side is a fact that augmentation and flip TTA
must change with the pixels (:func:`flip_side`); captions read it back through :func:`normalise_side`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SIDES = ("left", "right", "unknown")
# Derived facts of an image whose geometry is not known (no hand geometry in the catalogue, a bone not found).
UNKNOWN_FACTS: dict[str, Any] = {"side": "unknown", "wrist_angle_deg": None, "bent_wrist": None}


def flip_side(side: str) -> str:
    """The side a horizontal flip shows: left <-> right; unknown stays unknown."""
    return {"left": "right", "right": "left"}.get(side, side)


def normalise_side(value: Any) -> str:
    """``left`` / ``right`` / ``unknown`` from a table or annotation value (``L``, ``Right``, NaN, ...)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType") or (isinstance(value, float) and value != value):
        return "unknown"  # missing: None, NaN, pandas NA / NaT
    word = str(value).strip().lower()
    return {"left": "left", "l": "left", "right": "right", "r": "right"}.get(word, "unknown")


@dataclass(frozen=True)
class ImageFacts:
    """What is known of one image before augmentation: hand side and the caption's metadata."""

    side: str = "unknown"  # one of SIDES (always unknown without hand geometry)
    meta: dict[str, Any] = field(default_factory=dict)  # age, sex, weight, height, wrist_angle_deg, bent_wrist

    def flipped(self) -> "ImageFacts":
        return ImageFacts(side=flip_side(self.side), meta=self.meta)
