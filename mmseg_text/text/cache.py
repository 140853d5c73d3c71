"""Caption embedding cache: each unique caption is encoded once per text tower, then reused.

With a frozen text tower the features of a caption never change, so training, evaluation and
prediction share them: after :meth:`TextEmbeddingCache.warm` a training step only gathers cached
tensors and never runs the text transformer.

In memory: ``caption -> (tokens (L_i, D), pooled (D,))`` as CPU float32 tensors, tokens trimmed to
the caption's real tokens. On disk: ``cache_dir/<model>-<sha1(identity)[:16]>/shard-*.safetensors``,
one directory per :attr:`TextTower.identity` (a different model, weights file or feature version
never reads another's embeddings). Each shard holds ``<key>.tokens`` / ``<key>.pooled`` tensors with
``key = sha1(identity + caption)`` and, in its metadata, the identity and the key -> caption map.
Shards are written atomically under unique names, so several processes (one per GPU) may save into
the same directory; a new cache object loads every shard it finds and calls the tower for none of
their captions.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from mmseg_text.io import atomic_path, atomic_write_text
from mmseg_text.text.tower import TextFeatures, TextTower

logger = logging.getLogger(__name__)

CACHE_FORMAT = "mmseg_text.text_cache.v1"


def identity_dirname(identity: str) -> str:
    """Readable, filesystem-safe directory name for one encoder identity."""
    head = re.sub(r"[^A-Za-z0-9._-]+", "-", identity.split("|")[0]).strip("-")[:60]
    return f"{head}-{hashlib.sha1(identity.encode()).hexdigest()[:16]}"


class TextEmbeddingCache:
    """Caption -> :class:`TextFeatures`, encoded once per caption and tower, kept in memory and on disk.

    Args:
        tower: a frozen text tower (a tower with trainable parameters changes its features during
            training; call ``tower.encode`` in the training step instead).
        cache_dir: root of the on-disk cache (``text.cache_dir``); None keeps it in memory only.
        batch_size: captions per encoder call (``text.batch_size``).
        progress: show a progress bar while warming (pass ``accelerator.is_main_process``).
        max_shards: when more shards than this exist, :meth:`save` merges them into one.

    ``cache.width`` is the feature size D. Counters for tests and logs: ``encoder_calls`` (tower.encode calls), ``encoded_captions``
    (captions encoded by this object), ``loaded_captions`` (captions read from disk).
    """

    def __init__(self, tower: TextTower, cache_dir: Optional[str | Path], *, batch_size: int = 64,
                 progress: bool = True, max_shards: int = 16):
        if tower.trainable:
            raise ValueError("TextEmbeddingCache needs a frozen text tower, but this one has trainable parameters: "
                             "its features would change during training, so cached ones would be stale")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tower: Optional[TextTower] = tower  # None after release_tower(): lookups of cached captions only
        self.identity = tower.identity
        self.width = tower.width
        self.directory = Path(cache_dir) / identity_dirname(self.identity) if cache_dir is not None else None
        self.batch_size = int(batch_size)
        self.progress = progress
        self.max_shards = int(max_shards)
        self._tokens: dict[str, torch.Tensor] = {}
        self._pooled: dict[str, torch.Tensor] = {}
        self._unsaved: list[str] = []
        self._shards: set[Path] = set()
        self.encoder_calls = 0
        self.encoded_captions = 0
        self.loaded_captions = 0
        self._load()

    # ---- queries
    def __len__(self) -> int:
        return len(self._pooled)

    def __contains__(self, caption: object) -> bool:
        return caption in self._pooled

    def captions(self) -> list[str]:
        return list(self._pooled)

    def release_tower(self) -> None:
        """Drop the text tower (frees its memory once every caption of the run is warm).

        Later lookups of cached captions work as before; an uncached caption raises KeyError.
        """
        self.tower = None

    # ---- encoding
    def warm(self, captions: Iterable[str], *, batch_size: Optional[int] = None, progress: Optional[bool] = None,
             save: bool = True) -> int:
        """Encode the captions not cached yet (batched, progress bar), then save; returns how many were new."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._pooled]
        for caption in missing:
            if not isinstance(caption, str):
                raise TypeError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
        if not missing:
            return 0
        size = batch_size or self.batch_size
        show = self.progress if progress is None else progress
        with tqdm(total=len(missing), desc="text embeddings", unit="caption", disable=not show) as bar:
            for start in range(0, len(missing), size):
                chunk = missing[start:start + size]
                self._encode(chunk)
                bar.update(len(chunk))
        if save:
            self.save()
        return len(missing)

    def _encode(self, captions: Sequence[str]) -> None:
        if self.tower is None:
            raise KeyError(f"{len(captions)} caption(s) are not in the text embedding cache and its tower was "
                           f"released (warm every caption before release_tower()); first: {captions[0]!r}")
        with torch.no_grad():
            feats = self.tower.encode(captions)
        self.encoder_calls += 1
        self.encoded_captions += len(captions)
        tokens, mask, pooled = feats.tokens.detach().cpu(), feats.mask.cpu(), feats.pooled.detach().cpu()
        for i, caption in enumerate(captions):
            self._tokens[caption] = tokens[i][mask[i]].float().contiguous().clone()
            self._pooled[caption] = pooled[i].float().contiguous().clone()
            self._unsaved.append(caption)

    def lookup(self, captions: Sequence[str], device: Any = None) -> TextFeatures:
        """Features of a batch of captions, tokens padded to the longest in the batch (mask False on padding).

        Captions not cached yet are encoded now (and counted); call :meth:`warm` beforehand so that
        a training step never runs the text tower.
        """
        captions = list(captions)
        if not captions:
            raise ValueError("lookup() needs at least one caption")
        missing = [c for c in dict.fromkeys(captions) if c not in self._pooled]
        if missing:
            self.warm(missing, progress=False, save=False)
        rows = [self._tokens[c] for c in captions]
        length = max(r.shape[0] for r in rows)
        tokens = torch.zeros(len(rows), length, self.width)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            tokens[i, :row.shape[0]] = row
            mask[i, :row.shape[0]] = True
        pooled = torch.stack([self._pooled[c] for c in captions])
        feats = TextFeatures(tokens=tokens, mask=mask, pooled=pooled)
        return feats.to(device) if device is not None else feats

    # ---- persistence
    def _key(self, caption: str) -> str:
        return hashlib.sha1(f"{self.identity}\x00{caption}".encode()).hexdigest()

    def _load(self) -> None:
        if self.directory is None or not self.directory.is_dir():
            return
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as f:
                    meta = f.metadata() or {}
                    if meta.get("format") != CACHE_FORMAT or meta.get("identity") != self.identity:
                        logger.warning("skipping text cache shard %s: written for another encoder or format", shard)
                        continue
                    for key, caption in json.loads(meta["captions"]).items():
                        if caption not in self._pooled:
                            self._tokens[caption] = f.get_tensor(f"{key}.tokens")
                            self._pooled[caption] = f.get_tensor(f"{key}.pooled")
                            self.loaded_captions += 1
            except Exception as err:  # a foreign or damaged file must not stop training: re-encode instead
                logger.warning("skipping unreadable text cache shard %s: %s", shard, err)
                continue
            self._shards.add(shard)

    def _write_shard(self, captions: Sequence[str]) -> Path:
        assert self.directory is not None
        tensors: dict[str, torch.Tensor] = {}
        names: dict[str, str] = {}
        for caption in captions:
            key = self._key(caption)
            names[key] = caption
            tensors[f"{key}.tokens"] = self._tokens[caption]
            tensors[f"{key}.pooled"] = self._pooled[caption]
        metadata = {"format": CACHE_FORMAT, "identity": self.identity, "captions": json.dumps(names)}
        path = self.directory / f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self._shards.add(path)
        return path

    def save(self) -> Optional[Path]:
        """Write the captions encoded since the last save to a new shard; returns its path (None if nothing new)."""
        if self.directory is None or not self._unsaved:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        identity_file = self.directory / "identity.txt"
        if not identity_file.exists():
            atomic_write_text(identity_file, self.identity + "\n")
        path = self._write_shard(list(dict.fromkeys(self._unsaved)))
        self._unsaved.clear()
        if len(self._shards) > self.max_shards:
            path = self._compact()
        return path

    def _compact(self) -> Path:
        """Merge every known shard into one (this object holds all their entries in memory)."""
        old = set(self._shards)
        merged = self._write_shard(list(self._pooled))
        for shard in old:
            shard.unlink(missing_ok=True)
        self._shards = {merged}
        return merged


__all__ = ["CACHE_FORMAT", "TextEmbeddingCache", "identity_dirname"]
