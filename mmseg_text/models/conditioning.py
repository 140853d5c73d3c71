"""Text -> image fusion blocks, each gated by a zero-initialised scalar.

``GatedCrossAttention`` follows Flamingo's GatedCrossAttentionBlock (Alayrac et al., 2022; lucidrains'
flamingo-pytorch): image tokens attend to caption tokens, and both the attention and its feed-forward
are added through ``tanh(gate)`` with the gate at 0, so at step 0 the network is the image-only one.
``FiLM`` (Perez et al., 2018; as in CLIPSeg) scales and shifts channels from the pooled caption, with
the same gate. The text never flows into the image path except through a gate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TextContext:
    """Text features for a batch of images (produced from the text tower's cached outputs)."""

    tokens: Tensor  # (B, L, D) caption tokens per image (meta tokens and/or one token per class)
    mask: Tensor  # (B, L) bool, True = a real token to attend to
    pooled: Tensor  # (B, D) pooled caption embedding per image (FiLM)
    class_embeddings: Optional[Tensor] = None  # (K, D) bone-name embeddings (text_query head)

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3:
            raise ValueError(f"TextContext.tokens must be (B, L, D), got {tuple(self.tokens.shape)}")
        if self.mask.shape != self.tokens.shape[:2] or self.mask.dtype != torch.bool:
            raise ValueError(f"TextContext.mask must be bool {tuple(self.tokens.shape[:2])}, "
                             f"got {self.mask.dtype} {tuple(self.mask.shape)}")
        if self.pooled.shape != (self.tokens.shape[0], self.tokens.shape[2]):
            raise ValueError(f"TextContext.pooled must be (B, D) = {(self.tokens.shape[0], self.tokens.shape[2])}, "
                             f"got {tuple(self.pooled.shape)}")
        if self.class_embeddings is not None and (
                self.class_embeddings.ndim != 2 or self.class_embeddings.shape[1] != self.tokens.shape[2]):
            raise ValueError(f"TextContext.class_embeddings must be (K, {self.tokens.shape[2]}), "
                             f"got {tuple(self.class_embeddings.shape)}")

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TextContext":
        def move(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return TextContext(move(self.tokens), move(self.mask), move(self.pooled), move(self.class_embeddings))

    def expand(self, batch_size: int) -> "TextContext":
        """The same context for every image when it was given once (batch 1); else the batch must match."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"TextContext has batch {self.batch_size} but the images have batch {batch_size}")
        return TextContext(self.tokens.expand(batch_size, -1, -1), self.mask.expand(batch_size, -1),
                           self.pooled.expand(batch_size, -1), self.class_embeddings)


class GatedCrossAttention(nn.Module):
    """Image tokens (B, N, dim) attend to text tokens (B, L, text_dim); tanh-gated residuals."""

    def __init__(self, dim: int, text_dim: int, heads: int, *, ff_mult: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"cross-attention width {dim} is not divisible by attn_heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(text_dim, 2 * dim, bias=False)  # text_dim -> dim projection of the caption
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff_mult = ff_mult
        if ff_mult > 0:  # ff_mult=0: attention only, no feed-forward
            self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Dropout(dropout))
            self.ff_out = nn.Linear(dim * ff_mult, dim)
            self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        b, n, c = x.shape
        h = self.heads
        # A caption with no valid token may attend anywhere (no NaN from an all -inf softmax row) but
        # its values are zeroed, and to_out has no bias: its attention adds exactly nothing.
        has_text = mask.any(dim=1)
        mask = mask | ~has_text[:, None]
        q = self.to_q(self.norm(x)).view(b, n, h, c // h).transpose(1, 2)  # (b, h, n, c/h)
        tokens = tokens.to(x.dtype)  # a cache may hold fp16 features
        k, v = self.to_kv(self.text_norm(tokens)).view(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)  # (b, h, l, c/h)
        v = v * has_text[:, None, None, None].to(v.dtype)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :],
                                              dropout_p=self.dropout if self.training else 0.0)
        attn = attn.transpose(1, 2).reshape(b, n, c)
        # tanh(gate) scales the (small) output weights rather than the (large) activations: same result.
        x = x + F.linear(attn, self.to_out.weight * torch.tanh(self.attn_gate))
        if self.ff_mult == 0:
            return x
        ff_gate = torch.tanh(self.ff_gate)
        return x + F.linear(self.ff(x), self.ff_out.weight * ff_gate, self.ff_out.bias * ff_gate)


class FiLM(nn.Module):
    """x * (1 + tanh(g) * gamma) + tanh(g) * beta, with (gamma, beta) from the pooled caption; g = 0 at init."""

    def __init__(self, channels: int, text_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(text_dim)
        self.to_scale_shift = nn.Linear(text_dim, 2 * channels)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, pooled: Tensor) -> Tensor:
        gamma, beta = self.to_scale_shift(self.norm(pooled.to(x.dtype))).chunk(2, dim=-1)  # (B, C) each
        g = torch.tanh(self.gate)
        return x * (1 + g * gamma[:, :, None, None]) + g * beta[:, :, None, None]


class CrossAttentionConditioner(nn.Module):
    """``model.conditioning=cross_attn``: ``GatedCrossAttention`` over a feature map, (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int, text_dim: int, *, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.attn = GatedCrossAttention(channels, text_dim, heads, ff_mult=ff_mult, dropout=dropout)

    def forward(self, x: Tensor, context: TextContext) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (b, h*w, c)
        tokens = self.attn(tokens, context.tokens, context.mask)
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class FiLMConditioner(nn.Module):
    """``model.conditioning=film``: ``FiLM`` from the pooled caption."""

    def __init__(self, channels: int, text_dim: int, *, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.film = FiLM(channels, text_dim)

    def forward(self, x: Tensor, context: TextContext) -> Tensor:
        return self.film(x, context.pooled)


class MetadataEmbedder(nn.Module):
    """``model.conditioning_source=numbers``: the metadata number tokens (B, F, in_dim) -> (B, F, dim), and
    their pooled sum -> (B, dim), each through a two-layer MLP. It only reads metadata, so it counts as a
    text module (``text_parameters``); the gates after it keep step 0 equal to the unconditioned network."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.in_dim, self.dim = in_dim, dim
        self.tokens = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pooled = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def text_submodules(self) -> List[nn.Module]:
        return [self]

    def forward(self, context: TextContext) -> TextContext:
        dtype = self.tokens[0].weight.dtype
        return TextContext(self.tokens(context.tokens.to(dtype)), context.mask, self.pooled(context.pooled.to(dtype)),
                           context.class_embeddings)


def text_parameters(module: nn.Module) -> List[nn.Parameter]:
    """Parameters that only read text: every conditioning block (its gates included) and what a module lists in
    ``text_submodules()`` (the text-query head's name projection). ``train.text_lr_scale`` sets their learning rate."""
    params: dict[int, nn.Parameter] = {}
    for m in module.modules():
        parts = [m] if isinstance(m, (GatedCrossAttention, FiLM)) else list(getattr(m, "text_submodules", list)())
        for part in parts:
            params.update((id(p), p) for p in part.parameters())
    return list(params.values())


def iter_gates(module: nn.Module) -> List[nn.Parameter]:
    """Every gate in ``module``. Zeroed, every conditioning block is the identity and the forward equals the
    conditioning=none network with the same weights (tests open them to check that text reaches the logits)."""
    gates: List[nn.Parameter] = []
    for m in module.modules():
        if isinstance(m, GatedCrossAttention):
            gates += [m.attn_gate] + ([m.ff_gate] if m.ff_mult > 0 else [])
        elif isinstance(m, FiLM):
            gates.append(m.gate)
    return gates
