"""The text side of a run: caption builder, text tower, embedding cache and per-batch context.

Training: ``TrainingText.attach(train_ds, val_ds)`` gives the datasets their ``caption_fn`` (with the
shuffled pairing for the placebo control), encodes every caption the run can produce once (each
image under both hand sides, since a flip changes the side) and then drops the frozen tower.
Inference: ``InferenceText`` encodes captions on demand through the same on-disk cache.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.config import Config, ConfigError
from mmseg_text.engine.context import TextConditioner
from mmseg_text.models.conditioning import TextContext
from mmseg_text.text import CaptionBuilder, TextEmbeddingCache, build_text_tower


def _caption_builder(cfg: Config, catalogue: ClassCatalogue) -> CaptionBuilder:
    return CaptionBuilder(cfg.text.templates, catalogue, mode=cfg.text.mode, bucket_numbers=cfg.text.bucket_numbers,
                          shuffle=cfg.text.shuffle, seed=cfg.train.seed)


class _TextBase:
    def __init__(self, cfg: Config, catalogue: ClassCatalogue, *, progress: bool = True):
        if cfg.text.unfreeze_last_n > 0:
            raise ConfigError("text.unfreeze_last_n > 0 (fine-tuning the text tower) is not supported by the training "
                              "loop: its embeddings are cached; keep text.unfreeze_last_n=0")
        self.cfg = cfg
        self.mode = cfg.text.mode
        self.builder = _caption_builder(cfg, catalogue)
        self.tower = build_text_tower(cfg.text)
        self.width: int = self.tower.width
        self.cache = TextEmbeddingCache(self.tower, cfg.text.cache_dir, batch_size=cfg.text.batch_size, progress=progress)
        self.class_captions = self.builder.class_captions() if self.builder.uses_class_captions else None
        self.uses_meta = self.builder.uses_meta_captions
        self.conditioner: Optional[TextConditioner] = None

    def _make_conditioner(self) -> None:
        self.conditioner = TextConditioner(self.mode, self.cache, self.class_captions)


class TrainingText(_TextBase):
    """Captions and cached embeddings for a training run."""

    def attach(self, *datasets) -> None:
        meta_by_image: dict[str, dict[str, Any]] = {}
        groups: dict[str, int] = {}
        for ds in datasets:
            for i, record in enumerate(ds.records):
                meta_by_image[record.image_id] = ds.meta_of(i)
                groups[record.image_id] = record.person_id
        caption_fn = self.builder.caption_fn(meta_by_image, groups)
        captions: list[str] = []
        for ds in datasets:
            ds.caption_fn = caption_fn
            if caption_fn is None:
                continue
            for i, record in enumerate(ds.records):
                captions += caption_fn.variants({"image_id": record.image_id, "side": ds.side_of(i), "meta": ds.meta_of(i)})
        self.cache.warm(list(dict.fromkeys(captions + list(self.class_captions or []))))
        self._make_conditioner()
        # Frozen tower: every caption of the run is cached, the transformer is no longer needed.
        self.cache.release_tower()
        self.tower = None

    def context(self, batch: dict, device: torch.device | str) -> TextContext:
        return self.conditioner(batch.get("caption"), batch["image"].shape[0], device)


class InferenceText(_TextBase):
    """Captions for prediction: encoded on demand, saved to the on-disk cache by ``save``."""

    def __init__(self, cfg: Config, catalogue: ClassCatalogue):
        super().__init__(cfg, catalogue, progress=False)  # one caption at a time: no progress bars
        if self.class_captions:
            self.cache.warm(list(self.class_captions))
        self._make_conditioner()

    def caption(self, sample: dict) -> str:
        return self.builder.caption_for_image(sample)

    def context(self, captions: Optional[Sequence[str]], batch_size: int, device: torch.device | str) -> TextContext:
        # New captions are encoded by the cache lookup itself; ``save`` persists them once, at the end.
        return self.conditioner(captions if self.uses_meta else None, batch_size, device)

    def save(self) -> None:
        self.cache.save()


def build_text_side(cfg: Config, catalogue: ClassCatalogue, *, progress: bool = True) -> Optional[TrainingText]:
    return None if cfg.text.mode == "none" else TrainingText(cfg, catalogue, progress=progress)
