"""The text side of a run: captions -> frozen text tower (through its embedding cache) -> ``TextContext``.

One class serves training and prediction. In training, every caption the run can produce (each image
under both hand sides, since a flip changes the side) is encoded once up front and the tower is then
dropped, so a step only looks tensors up. In prediction new captions are encoded on demand through the
same on-disk cache and saved once at the end.

    meta:          tokens = the image's caption tokens, pooled = its pooled embedding
    classes:       tokens = one pooled embedding per class name (K tokens), pooled = their mean
    meta+classes:  both token sets concatenated, pooled = the caption's pooled embedding
The class-name embeddings also go to the ``text_query`` head (``TextContext.class_embeddings``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.data.index import DataIndex
from mmseg_text.models.conditioning import TextContext
from mmseg_text.choices import parse_text_mode
from mmseg_text.text import CaptionBuilder, CaptionFn, TextEmbeddingCache, build_text_tower
from mmseg_text.text.numbers import NumberEncoder


class CaptionEncoder:
    def __init__(self, cfg: Any, catalogue: ClassCatalogue, *, progress: bool = True):
        self.mode = parse_text_mode(cfg.text.mode)
        if not self.mode.enabled:
            raise ValueError("CaptionEncoder needs a text.mode that makes captions (got none)")
        self.builder = CaptionBuilder(cfg.text.templates, catalogue, mode=self.mode,
                                      bucket_numbers=cfg.text.bucket_numbers, shuffle=cfg.text.shuffle,
                                      seed=cfg.train.seed)
        tower = build_text_tower(cfg.text)
        self.width: int = tower.width
        self.cache = TextEmbeddingCache(tower, cfg.text.cache_dir, batch_size=cfg.text.batch_size, progress=progress)
        self.class_embeddings: Optional[torch.Tensor] = None
        if self.mode.uses_classes:
            captions = self.builder.class_captions()
            self.cache.warm(captions)
            self.class_embeddings = self.cache.lookup(captions).pooled.float()  # (K, D)

    # ---- captions
    def caption_fn(self, meta_by_image: Mapping[str, Mapping[str, Any]],
                   person_by_image: Mapping[str, int]) -> Optional[CaptionFn]:
        """``sample -> caption`` for every image of the run (the shuffled pairing spans all of them)."""
        return self.builder.caption_fn(meta_by_image, person_by_image)

    def caption(self, side: str, meta: Mapping[str, Any]) -> str:
        return self.builder.caption_for_image({"side": side, "meta": meta})

    def prepare_training(self, caption_fn: Optional[CaptionFn], *indices: DataIndex,
                         suffixes: Sequence[str] = ("",), with_dropped: bool = False) -> None:
        """Encode every caption the run can produce (each followed by each of ``suffixes``: the prompts of the
        positive control; with ``with_dropped`` also the no-metadata caption of caption dropout), then drop the
        frozen tower."""
        captions: list[str] = []
        if caption_fn is not None:
            for index in indices:
                for record, facts in zip(index.records, index.facts):
                    sample = {"image_id": record.image_id, "side": facts.side, "meta": facts.meta}
                    captions += [c + s for c in caption_fn.variants(sample, with_dropped=with_dropped)
                                 for s in suffixes]
        self.cache.warm(list(dict.fromkeys(captions)))
        self.cache.release_tower()

    # ---- per batch
    def caption_features(self, captions: Sequence[str]):
        """The per-image part of the context (tokens, mask, pooled) of ``captions``, from the cache."""
        return self.cache.lookup(list(captions))

    def context(self, captions: Optional[Sequence[str]], batch_size: int,
                device: torch.device | str = "cpu") -> TextContext:
        tokens, masks = [], []
        pooled = None
        if self.mode.uses_meta:
            if captions is None or len(captions) != batch_size:
                raise ValueError(f"text.mode={self.mode.name} needs one caption per image in the batch")
            feats = self.caption_features(captions)
            tokens.append(feats.tokens.float())
            masks.append(feats.mask)
            pooled = feats.pooled.float()
        if self.class_embeddings is not None:
            k, d = self.class_embeddings.shape
            tokens.append(self.class_embeddings.unsqueeze(0).expand(batch_size, k, d))
            masks.append(torch.ones(batch_size, k, dtype=torch.bool))
            if pooled is None:
                pooled = self.class_embeddings.mean(0, keepdim=True).expand(batch_size, d)
        return TextContext(tokens=torch.cat(tokens, dim=1), mask=torch.cat(masks, dim=1), pooled=pooled,
                           class_embeddings=self.class_embeddings).to(device)

    def batch_context(self, batch: dict, device: torch.device | str) -> TextContext:
        return self.context(batch.get("caption"), batch["image"].shape[0], device)

    def save(self) -> None:
        """Persist captions encoded on demand (prediction), once."""
        self.cache.save()


def build_caption_encoder(cfg: Any, catalogue: ClassCatalogue, *, progress: bool = True
                          ) -> Optional["CaptionEncoder | NumberEncoder"]:
    """What the conditioning reads: the captions through the text tower, or (``model.conditioning_source=numbers``)
    the metadata as numbers; None when text.mode=none."""
    if not parse_text_mode(cfg.text.mode).enabled:
        return None
    if getattr(cfg.model, "conditioning_source", "text") == "numbers":
        return NumberEncoder(cfg, catalogue, progress=progress)
    return CaptionEncoder(cfg, catalogue, progress=progress)
