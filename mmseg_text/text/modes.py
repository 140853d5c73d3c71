"""``text.mode`` parsed once into what it means; nothing else inspects the string.

    none          no text at all: no tower, no conditioning module
    classes       one caption per class (its name and description): K tokens shared by every image
    meta          one caption per image (patient metadata and derived facts)
    meta+classes  both
"""
from __future__ import annotations

from dataclasses import dataclass

TEXT_MODES = ("none", "classes", "meta", "meta+classes")


@dataclass(frozen=True)
class TextMode:
    name: str
    uses_meta: bool  # a caption per image
    uses_classes: bool  # a caption per class

    @property
    def enabled(self) -> bool:
        return self.uses_meta or self.uses_classes


def parse_text_mode(mode: str | TextMode) -> TextMode:
    """The meaning of a ``text.mode`` value; an unknown value is an error listing the choices."""
    if isinstance(mode, TextMode):
        return mode
    if mode not in TEXT_MODES:
        raise ValueError(f"config key 'text.mode' must be one of {list(TEXT_MODES)}, got {mode!r}")
    parts = set(mode.split("+"))
    return TextMode(name=mode, uses_meta="meta" in parts, uses_classes="classes" in parts)
