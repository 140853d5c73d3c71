"""From captions to the model's ``TextContext``, through the frozen text tower's embedding cache.

With a frozen tower every caption the run can produce is encoded once, before training
(``warm``), and the tower is then dropped from memory: a training step only looks tensors up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from mmseg_text.models.conditioning import TextContext
from mmseg_text.text import TextEmbeddingCache


@dataclass
class TextConditioner:
    """Builds per-batch ``TextContext`` for one ``text.mode``.

    meta:          tokens = the image's caption tokens, pooled = its pooled embedding
    classes:       tokens = one pooled embedding per bone name (K tokens), pooled = their mean
    meta+classes:  both token sets concatenated, pooled = the caption's pooled embedding
    Bone-name embeddings are also handed to the ``text_query`` head (``class_embeddings``).
    """

    mode: str
    cache: TextEmbeddingCache
    class_captions: Optional[Sequence[str]] = None

    def __post_init__(self) -> None:
        self.uses_meta = "meta" in self.mode
        self.uses_classes = "classes" in self.mode
        self.class_pooled: Optional[torch.Tensor] = None
        if self.uses_classes:
            if not self.class_captions:
                raise ValueError(f"text.mode={self.mode} needs class captions")
            self.class_pooled = self.cache.lookup(list(self.class_captions)).pooled.float()

    def __call__(self, captions: Optional[Sequence[str]], batch_size: int,
                 device: torch.device | str = "cpu") -> TextContext:
        tokens, masks = [], []
        pooled = None
        if self.uses_meta:
            if captions is None or len(captions) != batch_size:
                raise ValueError(f"text.mode={self.mode} needs one caption per image in the batch")
            feats = self.cache.lookup(list(captions))
            tokens.append(feats.tokens.float())
            masks.append(feats.mask)
            pooled = feats.pooled.float()
        class_embeddings = None
        if self.uses_classes:
            class_embeddings = self.class_pooled
            k, d = class_embeddings.shape
            tokens.append(class_embeddings.unsqueeze(0).expand(batch_size, k, d))
            masks.append(torch.ones(batch_size, k, dtype=torch.bool))
            if pooled is None:
                pooled = class_embeddings.mean(0, keepdim=True).expand(batch_size, d)
        context = TextContext(
            tokens=torch.cat(tokens, dim=1),
            mask=torch.cat(masks, dim=1),
            pooled=pooled,
            class_embeddings=class_embeddings,
        )
        return context.to(device)
