"""TextConditionedSegmenter: encoder -> (text-conditioned) UNet decoder -> head, one pass for all classes.

Unlike CLIPSeg-style models that run once per class prompt, all K masks come out of one forward; the
caption (metadata and/or class-name tokens) conditions the shared decoder. This file only wires and
validates: the blocks live in ``encoders.py``, ``decoder.py``, ``heads.py`` and ``conditioning.py``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .conditioning import TextContext


class TextConditionedSegmenter(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module, *,
                 context_adapter: Optional[nn.Module] = None) -> None:
        super().__init__()
        enc_channels = list(getattr(encoder, "feature_channels", decoder.encoder_channels))
        if enc_channels != decoder.encoder_channels:
            raise ValueError(f"decoder built for encoder channels {decoder.encoder_channels}, "
                             f"the encoder gives {enc_channels}")
        if head.in_channels != decoder.out_channels:
            raise ValueError(f"head takes {head.in_channels} channels, the decoder gives {decoder.out_channels}")
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        # model.conditioning_source=numbers: the metadata MLP in front of the blocks (None: captions as they are)
        self.context_adapter = context_adapter

    @property
    def conditioning(self) -> str:
        return self.decoder.conditioning

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def text_dim(self) -> Optional[int]:
        """Width of the text features the model reads (None when it reads none)."""
        if self.context_adapter is not None:
            return self.context_adapter.in_dim
        return self.decoder.text_dim or getattr(self.head, "text_dim", None)

    @property
    def has_text_modules(self) -> bool:
        """True when any module reads text: conditioning blocks or a text_query head."""
        return len(self.decoder.conditioners) > 0 or self.head.needs_text

    def forward(self, images: Tensor, context: Optional[TextContext] = None) -> Tensor:
        """images (B, C, H, W) -> logits (B, K, H, W); ``context`` is ignored when nothing reads text."""
        in_chans = getattr(self.encoder, "input_channels", images.shape[1])
        if images.ndim != 4 or images.shape[1] != in_chans:
            raise ValueError(f"images must be (B, {in_chans}, H, W), got {tuple(images.shape)}")
        if not self.has_text_modules:
            context = None
        elif context is None:
            what = f"conditioning={self.conditioning!r}" if len(self.decoder.conditioners) else "head=text_query"
            raise ValueError(f"model with {what} needs a TextContext: call model(images, context)")
        else:
            if context.dim != self.text_dim:
                raise ValueError(f"TextContext has width {context.dim}, "
                                 f"the model was built for text_dim={self.text_dim}")
            context = context.expand(images.shape[0])
            if self.context_adapter is not None:
                context = self.context_adapter(context)
        features = self.encoder(images)
        x = self.decoder(features, context if len(self.decoder.conditioners) else None,
                         output_size=tuple(images.shape[-2:]))
        return self.head(x, context)
