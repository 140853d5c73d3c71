"""Shared helpers for the model tests: tiny configs, tiny backbones and random text contexts.

Sizes are tiny (64-128 px, decoder widths <= 32) so the whole suite runs on a shared CPU.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typing import Any, Dict, Tuple  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mmseg_text.config import ModelConfig  # noqa: E402
from mmseg_text.models import TextContext  # noqa: E402

TEXT_DIM = 16
NUM_CLASSES = 29
TINY_DECODER = [32, 16, 16, 8, 8]
# A Swin built small through timm kwargs (timm returns its features NHWC).
TINY_SWIN = dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4)

# id -> (timm name, timm kwargs, input size)
BACKBONES: Dict[str, Tuple[str, Dict[str, Any], int]] = {
    "swin-64": ("swin_tiny_patch4_window7_224", TINY_SWIN, 64),
    "swin-128": ("swin_tiny_patch4_window7_224", TINY_SWIN, 128),
    "convnext_atto": ("convnext_atto", {}, 64),
    "resnet18": ("resnet18", {}, 64),
    "effnet-lite0-64": ("tf_efficientnet_lite0", {}, 64),
    "effnet-lite0-96": ("tf_efficientnet_lite0", {}, 96),
}


def tiny_cfg(encoder: str = "resnet18", *, conditioning: str = "cross_attn", head: str = "conv",
             **overrides: Any) -> ModelConfig:
    values: Dict[str, Any] = dict(encoder=encoder, decoder_channels=list(TINY_DECODER), conditioning=conditioning,
                                  condition_stages=[0, 1, 2], attn_heads=2, head=head, query_dim=8)
    values.update(overrides)
    return ModelConfig(**values)


def make_context(batch: int = 2, *, seed: int = 0, length: int = 7, text_dim: int = TEXT_DIM,
                 classes: int = NUM_CLASSES) -> TextContext:
    """Random caption tokens (the last two padded in row 0), pooled text and class-name embeddings."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -2:] = False
    return TextContext(torch.randn(batch, length, text_dim, generator=g), mask,
                       torch.randn(batch, text_dim, generator=g), torch.randn(classes, text_dim, generator=g))


def images(batch: int = 2, size: int = 64, *, seed: int = 0, in_chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, in_chans, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
