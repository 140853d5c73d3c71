"""UNet decoder (Ronneberger et al., 2015; smp's ``decoders/unet``) with optional text conditioning.

The decoder reads the encoder's contract (channels and reductions, shallow -> deep) and upsamples
by 2 per block from the deepest stride back to the input size, concatenating the encoder feature of
each stride it passes (a backbone whose first feature is at stride 4, like Swin or ConvNeXt, simply
has no skip for the last two blocks). Block 0 is the deepest. After each block listed in
``condition_stages`` a text block (``cross_attn`` or ``film``, see ``conditioning.py``) is applied;
with ``conditioning="none"`` no text module exists at all.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import TextContext
from .registry import CONDITIONINGS, NORMS, lookup


def _conv_norm_relu(in_ch: int, out_ch: int, norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), norm_layer(out_ch), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample to ``size`` (nearest), concatenate the skip (if any), two 3x3 conv-norm-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = _conv_norm_relu(in_ch + skip_ch, out_ch, norm_layer)
        self.conv2 = _conv_norm_relu(out_ch, out_ch, norm_layer)

    def forward(self, x: Tensor, skip: Optional[Tensor], size: Tuple[int, int]) -> Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


def decoder_reductions(encoder_reductions: Sequence[int]) -> List[int]:
    """Output stride of each decoder block: halving from the deepest encoder stride down to 1."""
    reductions = list(encoder_reductions)
    powers = all(r >= 1 and r & (r - 1) == 0 for r in reductions)
    if not powers or any(a >= b for a, b in zip(reductions, reductions[1:])):
        raise ValueError(f"UNet decoder needs strictly increasing power-of-2 encoder reductions, got {reductions}")
    out, r = [], reductions[-1]
    while r > 1:
        r //= 2
        out.append(r)
    return out


class UNetDecoder(nn.Module):
    """Encoder features (shallow -> deep) -> (B, out_channels, H, W) at the input size."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], *,
                 encoder_reductions: Optional[Sequence[int]] = None, conditioning: str = "none",
                 condition_stages: Sequence[int] = (), text_dim: Optional[int] = None, attn_heads: int = 4,
                 attn_ff_mult: int = 1, dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        encoder_channels = list(encoder_channels)
        if encoder_reductions is None:  # the usual layout: stride 2 per stage, deepest at 32
            encoder_reductions = [32 // 2 ** (len(encoder_channels) - 1 - i) for i in range(len(encoder_channels))]
        if len(encoder_reductions) != len(encoder_channels):
            raise ValueError(f"{len(encoder_channels)} encoder channels but {len(encoder_reductions)} reductions")
        self.block_reductions = decoder_reductions(encoder_reductions)
        if len(decoder_channels) != len(self.block_reductions):
            raise ValueError(
                f"model.decoder_channels needs {len(self.block_reductions)} entries (deepest first, one per x2 "
                f"upsampling from stride {encoder_reductions[-1]} to 1), got {list(decoder_channels)}")
        block_factory = lookup(CONDITIONINGS, "model.conditioning", conditioning)
        norm_layer = lookup(NORMS, "model.norm", norm)
        stages = sorted(set(condition_stages)) if conditioning != "none" else []
        bad = [s for s in stages if not 0 <= s < len(decoder_channels)]
        if bad:
            raise ValueError(f"model.condition_stages {bad} out of range: the decoder has stages "
                             f"0..{len(decoder_channels) - 1} (0 = deepest)")
        if conditioning != "none" and not stages:
            raise ValueError(f"model.conditioning={conditioning!r} with empty model.condition_stages: name the "
                             "decoder stages that read text, or use conditioning=none")
        if stages and text_dim is None:
            raise ValueError(f"model.conditioning={conditioning!r} reads text: "
                             "text_dim (the text tower width) is required")

        self.encoder_channels = encoder_channels
        self.conditioning = conditioning
        self.condition_stages = stages
        self.text_dim = text_dim if conditioning != "none" else None
        self.out_channels = decoder_channels[-1]
        # block i upsamples to stride block_reductions[i] and takes the encoder feature of that stride
        self._skip_index = [encoder_reductions.index(r) if r in encoder_reductions else None
                            for r in self.block_reductions]
        in_chs = [encoder_channels[-1]] + list(decoder_channels[:-1])
        skip_chs = [0 if i is None else encoder_channels[i] for i in self._skip_index]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o, norm_layer) for i, s, o in zip(in_chs, skip_chs, decoder_channels))
        self.conditioners = nn.ModuleDict()  # stays empty with conditioning="none"
        for s in stages:
            self.conditioners[str(s)] = block_factory(decoder_channels[s], text_dim, heads=attn_heads,
                                                      ff_mult=attn_ff_mult, dropout=dropout)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features: Sequence[Tensor], context: Optional[TextContext] = None, *,
                output_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """``output_size`` defaults to the deepest feature's size times its stride."""
        x = features[-1]
        if output_size is None:
            stride = 2 ** len(self.blocks)
            output_size = (x.shape[-2] * stride, x.shape[-1] * stride)
        if self.conditioners and context is None:
            raise ValueError(f"decoder with conditioning={self.conditioning!r} needs a TextContext")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            skip = None if self._skip_index[i] is None else features[self._skip_index[i]]
            if skip is not None:
                size = tuple(skip.shape[-2:])
            elif i == last:
                size = tuple(output_size)
            else:
                size = (x.shape[-2] * 2, x.shape[-1] * 2)
            x = block(x, skip, size)
            if str(i) in self.conditioners:
                x = self.conditioners[str(i)](x, context)
        if tuple(x.shape[-2:]) != tuple(output_size):  # last block had a stride-1 skip of another size
            x = F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)
        return self.dropout(x)
