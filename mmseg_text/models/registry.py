"""The one registry of model choices: conditioning blocks, heads and decoder norms.

Config validation (``config.validate``) and the builders read these tables and nothing else, so adding a
conditioning type means writing its block (``conditioning.py``) and one line here. Every table is filled
here, explicitly: no choice depends on some module having been imported first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from torch import nn

from .conditioning import CrossAttentionConditioner, FiLMConditioner
from .heads import ConvHead, TextQueryHead


@dataclass(frozen=True)
class HeadSpec:
    build: Callable[..., nn.Module]  # (in_channels, num_classes, text_dim, query_dim) -> head
    needs_class_embeddings: bool  # reads the bone-name embeddings: text.mode must include classes


def _group_norm(channels: int) -> nn.GroupNorm:
    # up to 32 groups of at least 4 channels (16 -> 4 groups, 256 -> 32 groups)
    return nn.GroupNorm(math.gcd(32, max(1, channels // 4)), channels)


# model.conditioning -> block factory (channels, text_dim, *, heads, ff_mult, dropout); "none" builds nothing.
CONDITIONINGS: Mapping[str, Optional[Callable[..., nn.Module]]] = {
    "none": None,
    "cross_attn": CrossAttentionConditioner,
    "film": FiLMConditioner,
}

# model.head -> how to build it and what text it reads.
HEADS: Mapping[str, HeadSpec] = {
    "conv": HeadSpec(lambda in_ch, k, text_dim, query_dim: ConvHead(in_ch, k), needs_class_embeddings=False),
    "text_query": HeadSpec(lambda in_ch, k, text_dim, query_dim: TextQueryHead(in_ch, text_dim, query_dim, num_classes=k),
                           needs_class_embeddings=True),
}

# model.norm -> decoder normalisation layer. "group" uses per-sample statistics: results do not depend on
# the batch size or on how a batch is split across processes.
NORMS: Mapping[str, Callable[[int], nn.Module]] = {"batch": nn.BatchNorm2d, "group": _group_norm}


def lookup(table: Mapping[str, Any], key: str, value: Any) -> Any:
    """``table[value]``; an unknown value is a ValueError naming the config key and the choices."""
    if value not in table:
        raise ValueError(f"config key '{key}' must be one of {list(table)}, got {value!r}")
    return table[value]
