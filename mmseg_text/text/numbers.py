"""``model.conditioning_source=numbers``: the patient metadata as numbers, the plain way to give it to a network.

This is the control the caption path is judged against: the same facts the metadata caption states (age, sex,
weight, height, hand side, wrist angle), normalised by fixed reference scales and each with a missing-value
flag, go through a small trainable MLP (``models.conditioning.MetadataEmbedder``) into the same gated
conditioning blocks. If captions help and numbers help as much, the help is the metadata's, not the language
model's; if neither helps, the metadata carries nothing the pixels do not.

Each fact is one token of width ``3 * F`` (F facts): a one-hot of which fact it is, its value in that fact's
slot, its missing flag in that slot. A missing value is a flag of 1 with value 0, never a silent 0 alone.
The pooled vector (FiLM) is the sum of the tokens: all values and all flags at once.

``NumberEncoder`` has the interface of ``CaptionEncoder`` (what training, validation and prediction call),
but what it is "told" about an image is the facts themselves, read from the batch's ``side`` and ``meta``.
No text tower is loaded.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from mmseg_text.choices import parse_text_mode
from mmseg_text.data.facts import normalise_side
from mmseg_text.data.metadata import normalise_sex
from mmseg_text.models.conditioning import TextContext
from mmseg_text.text.captions import is_missing

FACTS = ("age", "sex", "weight", "height", "side", "wrist_angle_deg")
# (centre, scale) of the measured facts: about the adult range of REFERENCE.md mapped to [-2, 2]
SCALES = {"age": (40.0, 15.0), "weight": (70.0, 15.0), "height": (168.0, 10.0), "wrist_angle_deg": (0.0, 30.0)}
CATEGORIES = {"sex": {"female": -1.0, "male": 1.0}, "side": {"left": -1.0, "right": 1.0}}
WIDTH = 3 * len(FACTS)


def fact_vector(side: Any, meta: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of one image, each (F,) float32; a missing or unreadable fact is value 0, flag 1."""
    values = np.zeros(len(FACTS), np.float32)
    missing = np.zeros(len(FACTS), np.float32)
    for i, name in enumerate(FACTS):
        value = _fact_value(name, side if name == "side" else meta.get(name))
        if value is None:
            missing[i] = 1.0
        else:
            values[i] = value
    return values, missing


def _fact_value(name: str, raw: Any) -> Optional[float]:
    if is_missing(raw) or isinstance(raw, bool):
        return None
    if name in CATEGORIES:
        try:
            word = normalise_side(raw) if name == "side" else normalise_sex(raw)
        except ValueError:
            return None
        return CATEGORIES[name].get(word)
    try:
        x = float(raw)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(x) or (name != "wrist_angle_deg" and x <= 0):
        return None
    centre, scale = SCALES[name]
    return (x - centre) / scale


def number_tokens(values: np.ndarray, missing: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F) values and flags -> tokens (B, F, 3F) and pooled (B, 3F) = the tokens' sum."""
    values, missing = torch.as_tensor(values), torch.as_tensor(missing)
    b, f = values.shape
    eye = torch.eye(f, dtype=torch.float32)
    tokens = torch.cat([eye.expand(b, f, f), eye * values[:, :, None], eye * missing[:, :, None]], dim=2)
    return tokens, tokens.sum(dim=1)


class NumberEncoder:
    """The metadata as numbers, with ``CaptionEncoder``'s interface (``mode``, ``width``, ``context``...)."""

    def __init__(self, cfg: Any = None, catalogue: Any = None, *, progress: bool = True) -> None:
        self.mode = parse_text_mode("meta")
        self.width = WIDTH
        self.class_embeddings = None

    def caption_fn(self, meta_by_image: Mapping[str, Any], person_by_image: Mapping[str, int]) -> None:
        return None  # no caption strings: the batch's own side and meta are read

    def caption(self, side: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """What the model is told about one image: its facts."""
        return {"side": side, "meta": dict(meta)}

    def prepare_training(self, caption_fn: Any, *indices: Any, suffixes: Sequence[str] = ("",),
                         with_dropped: bool = False) -> None:
        """Nothing to encode up front."""

    def caption_features(self, facts: Sequence[Mapping[str, Any]]) -> TextContext:
        """The per-image part of the context: here all of it (there are no class tokens)."""
        return self.context(facts, len(facts))

    def context(self, facts: Optional[Sequence[Mapping[str, Any]]], batch_size: int,
                device: torch.device | str = "cpu") -> TextContext:
        if facts is None or len(facts) != batch_size:
            raise ValueError("model.conditioning_source=numbers needs the facts (side, meta) of every image in the batch")
        rows = [fact_vector(f.get("side"), f.get("meta") or {}) for f in facts]
        tokens, pooled = number_tokens(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
        return TextContext(tokens=tokens, mask=mask, pooled=pooled).to(device)

    def batch_context(self, batch: dict, device: torch.device | str) -> TextContext:
        facts = [{"side": s, "meta": m} for s, m in zip(batch["side"], batch["meta"])]
        return self.context(facts, batch["image"].shape[0], device)

    def save(self) -> None:
        """Nothing is cached."""


__all__ = ["CATEGORIES", "FACTS", "NumberEncoder", "SCALES", "WIDTH", "fact_vector", "number_tokens"]
