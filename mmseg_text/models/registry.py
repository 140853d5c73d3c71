"""The model registries: ``model.conditioning`` / ``model.conditioning_source`` / ``model.head`` / ``model.norm`` names -> factories.

The names and what they mean (does a conditioning read text, does a head need class-name embeddings) live
in :mod:`mmseg_text.choices`, which config validation reads; the builders read these tables. Adding a
conditioning type means writing its block (``conditioning.py``), one line here and one in ``choices.py``;
``tests/test_registries.py`` fails when the two disagree. Every table is filled here, explicitly.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

from torch import nn

from mmseg_text.choices import lookup  # noqa: F401  (the builders' lookup, re-exported)

from .conditioning import CrossAttentionConditioner, FiLMConditioner, MetadataEmbedder
from .heads import ConvHead, TextQueryHead


def _group_norm(channels: int) -> nn.GroupNorm:
    # up to 32 groups of at least 4 channels (16 -> 4 groups, 256 -> 32 groups)
    return nn.GroupNorm(math.gcd(32, max(1, channels // 4)), channels)


# model.conditioning -> block factory (channels, text_dim, *, heads, ff_mult, dropout); "none" builds nothing.
CONDITIONINGS: Mapping[str, Optional[Callable[..., nn.Module]]] = {
    "none": None,
    "cross_attn": CrossAttentionConditioner,
    "film": FiLMConditioner,
}

# model.conditioning_source -> the adapter (input width, output width) in front of the conditioning blocks;
# "text" reads the caption embeddings as they are.
CONDITIONING_SOURCES: Mapping[str, Optional[Callable[[int, int], nn.Module]]] = {
    "text": None,
    "numbers": MetadataEmbedder,
}

# model.head -> factory (in_channels, num_classes, text_dim, query_dim) -> head; what text it reads: choices.HEADS.
HEADS: Mapping[str, Callable[..., nn.Module]] = {
    "conv": lambda in_ch, k, text_dim, query_dim: ConvHead(in_ch, k),
    "text_query": lambda in_ch, k, text_dim, query_dim: TextQueryHead(in_ch, text_dim, query_dim, num_classes=k),
}

# model.norm -> decoder normalisation layer. "group" uses per-sample statistics: results do not depend on
# the batch size or on how a batch is split across processes.
NORMS: Mapping[str, Callable[[int], nn.Module]] = {"batch": nn.BatchNorm2d, "group": _group_norm}
