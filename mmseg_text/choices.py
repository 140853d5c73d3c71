"""The names a config may choose, and what each name means: the floor that config validation stands on.

Each table here lists a choice's names with the properties validation needs (does a conditioning read text,
does a head need class-name embeddings). The factories live in registries next to their code, one per job:

    model.conditioning / model.head / model.norm   models/registry.py     CONDITIONINGS, HEADS, NORMS
    model.conditioning_source                       models/registry.py     CONDITIONING_SOURCES
    train.loss                                      training/losses.py     LOSS_REGISTRY
    train.averaging                                 training/averaging.py  AVERAGING_REGISTRY
    predict.window_mode                             inference/tiling.py    WINDOW_MODE_REGISTRY
    text.tower                                      text/encoder.py        TOWER_REGISTRY

and ``tests/test_registries.py`` asserts that every registry's keys equal its table's names. This module
imports nothing heavy (no torch), so ``import mmseg_text.config`` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class ConditioningChoice:
    reads_text: bool  # builds text-reading blocks (so text.mode must make captions)


@dataclass(frozen=True)
class HeadChoice:
    needs_class_embeddings: bool  # reads the bone-name embeddings: text.mode must include classes


CONDITIONINGS: Mapping[str, ConditioningChoice] = {
    "none": ConditioningChoice(reads_text=False),
    "cross_attn": ConditioningChoice(reads_text=True),
    "film": ConditioningChoice(reads_text=True),
}
HEADS: Mapping[str, HeadChoice] = {
    "conv": HeadChoice(needs_class_embeddings=False),
    "text_query": HeadChoice(needs_class_embeddings=True),
}
# What the conditioning blocks read: the caption embeddings of the text tower, or the metadata as numbers
# (text/numbers.py: normalised facts with missing flags through a small MLP), the control of the caption path.
CONDITIONING_SOURCES = ("text", "numbers")
NORMS = ("batch", "group")
LOSSES = ("bce_dice", "dice_focal")
AVERAGING = ("none", "ema", "swa")  # weight averaging: none | timm's EMA | stochastic weight averaging
WINDOW_MODES = ("gaussian", "constant")
TEXT_TOWERS = ("open_clip", "hf")  # open_clip: text.model + text.pretrained; hf: a local Hugging Face encoder (text.hf_path)
MIXED_PRECISIONS = ("no", "fp16", "bf16")
# Per class, chosen on held-out predictions (postprocess.py): keep every blob, keep the largest, or drop the blobs
# smaller than a fraction of the image area ("min_area:0.0005" = objects below 0.05 % of H x W, i.e. 33 px at 256²,
# 2,097 px at 2048²: a fraction, so a rule tuned at the validation size means the same at the original size).
# "attached": keep the components that touch the bone the catalogue says the class articulates with (attached_to).
# "exclusive": drop the pixels other classes claim (but for the bones it articulates with), keep the largest rest.
# The order is the preference on validation ties: the anatomical rule, then the mild ones, then the most aggressive.
POSTPROCESS_RULES = ("none", "attached", "min_area:0.0001", "min_area:0.0005", "min_area:0.002", "largest",
                     "exclusive")
COORD_CHANNELS = 2  # model.coord_channels: y, x of each pixel in the whole image (data/preprocess.py)
TEXT_MODES = ("none", "classes", "meta", "meta+classes")


def lookup(table: Mapping[str, Any] | tuple, key: str, value: Any) -> Any:
    """``table[value]`` (or ``value`` for a tuple of names); an unknown value is a ValueError naming the key."""
    names = list(table)
    if value not in names:
        raise ValueError(f"config key '{key}' must be one of {names}, got {value!r}")
    return table[value] if isinstance(table, Mapping) else value


# ---- text.mode, parsed once into what it means; nothing else inspects the string.
#     none          no text at all: no tower, no conditioning module
#     classes       one caption per class (its name and description): K tokens shared by every image
#     meta          one caption per image (patient metadata and derived facts)
#     meta+classes  both

@dataclass(frozen=True)
class TextMode:
    name: str
    uses_meta: bool  # a caption per image
    uses_classes: bool  # a caption per class

    @property
    def enabled(self) -> bool:
        return self.uses_meta or self.uses_classes


def parse_text_mode(mode: "str | TextMode") -> TextMode:
    """The meaning of a ``text.mode`` value; an unknown value is an error listing the choices."""
    if isinstance(mode, TextMode):
        return mode
    lookup(TEXT_MODES, "text.mode", mode)
    parts = set(mode.split("+"))
    return TextMode(name=mode, uses_meta="meta" in parts, uses_classes="classes" in parts)
