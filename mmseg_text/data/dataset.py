"""SegmentationDataset: images, multi-label masks and per-image facts as one sample dict.

The sample dict is the contract of docs/DESIGN.md. The dataset is generic: it is handed records and
their facts (``data.index``), a :class:`~mmseg_text.data.preprocess.Preprocessor`, augmentation and an
optional caption function, and knows nothing of the anatomy. Pixels come from the preprocessing cache
(default) or are decoded on the fly; either way the image is already at the working size when augmentation
runs, or, with ``crop``, is a foreground-aware crop of it (data/crops.py). The caption is built last, from
the augmented sample, so a horizontal flip that turned a right hand into a left one is described as left.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmseg_text.data.copy_paste import CopyPaste, paste_bone
from mmseg_text.data.cache import (SAMPLE_ERRORS, CachedSample, Origin, build_cache, crop_sample, load_or_build,
                                   load_window, preprocess_sample)
from mmseg_text.data.crops import check_crop_sizes, pick_origin
from mmseg_text.data.facts import ImageFacts, flip_side
from mmseg_text.data.index import DatasetError
from mmseg_text.data.layout import ImageRecord
from mmseg_text.data.preprocess import Preprocessor
from mmseg_text.data.prompts import GroupPrompt, with_prompt
from mmseg_text.data.transforms import Augmenter

logger = logging.getLogger(__name__)
__all__ = ["DatasetError", "SegmentationDataset", "collate"]


class SegmentationDataset(Dataset):
    """Samples of ``records`` (labelled when ``labelled``), with masks in ``class_names`` order.

    ``augment_seed``: the augmentation of sample i in epoch e is drawn from seed (augment_seed, e, i), the
    same whichever worker, process or resumed run loads it (see :meth:`set_epoch`). None: unseeded.
    ``crop``: each sample is a random ``crop``² window of the working-size image that shows some foreground.
    ``prompt``: the positive control of the text path (data/prompts.py): only the bones of a random set of
    groups are targets, and the caption says which.
    """

    def __init__(self, records: Sequence[ImageRecord], facts: Sequence[ImageFacts], *, class_names: Sequence[str],
                 preprocess: Preprocessor, labelled: bool = True, cache_dir: Optional[str | Path] = None,
                 transforms: Optional[Augmenter] = None, caption_fn: Optional[Callable[[dict], str]] = None,
                 augment_seed: Optional[int] = None, skip_bad_samples: bool = False, workers: int = 1,
                 progress: bool = True, name: str = "dataset", copy_paste: Optional[CopyPaste] = None,
                 crop: Optional[int] = None, prompt: Optional[GroupPrompt] = None, caption_drop_p: float = 0.0):
        if len(records) != len(facts):
            raise ValueError(f"{len(records)} records but {len(facts)} facts")
        self.class_names = tuple(class_names)
        self.preprocess = preprocess
        self.labelled = labelled
        self.transforms = transforms
        self.caption_fn = caption_fn
        self.augment_seed = augment_seed
        self.copy_paste = copy_paste if labelled else None
        if crop is not None:
            check_crop_sizes(preprocess.image_size, crop)
        self.crop = crop
        self.prompt = prompt if labelled else None
        self.caption_drop_p = float(caption_drop_p)
        self.epoch = 0
        self.name = name
        records, facts = list(records), list(facts)
        bad: list[tuple[str, str]] = []
        if labelled:
            bad += [(str(r.image_path), "no annotation JSON (labelled images need one)") for r in records if r.json_path is None]
        self.cache_paths: Optional[list[Optional[Path]]] = None
        if cache_dir is not None:
            readable = [r for r in records if not _listed(r, bad)]
            report = build_cache(readable, cache_dir=cache_dir, image_size=preprocess.image_size,
                                 class_names=self.class_names, workers=workers, progress=progress)
            bad += report.failed
            by_path = {str(r.image_path): p for r, p in zip(readable, report.paths)}
            self.cache_paths = [by_path.get(str(r.image_path)) for r in records]
        elif skip_bad_samples:  # without a cache nothing else reads every image up front
            bad += [b for b in (_unreadable(r, self.class_names) for r in records if not _listed(r, bad)) if b]
        self.skipped = _drop_bad(bad, skip_bad_samples, name)
        dropped = {path for path, _ in bad}
        keep = [i for i, r in enumerate(records) if str(r.image_path) not in dropped]
        self.records = [records[i] for i in keep]
        self.facts = [facts[i] for i in keep]
        if self.cache_paths is not None:
            self.cache_paths = [self.cache_paths[i] for i in keep]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        """Seeded like the augmentation: a resumed or DDP run draws the same crops and pastes."""
        return np.random.default_rng(None if self.augment_seed is None else [self.augment_seed, self.epoch, index, stream])

    def _augment_seed(self, index: int) -> Optional[int]:
        if self.augment_seed is None:
            return None
        return int(np.random.SeedSequence([self.augment_seed, self.epoch, index]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.records)

    def _paste(self, index: int, image: np.ndarray, masks: np.ndarray, side: str,
               origin: Optional[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng(index, 1)
        if rng.random() >= self.copy_paste.p:
            return image, masks
        donor = int(rng.integers(len(self) - 1))
        donor += donor >= index  # any other image
        donor_side = self.facts[donor].side
        mirror = "unknown" not in (side, donor_side) and side != donor_side
        if origin is None:
            donor_image, donor_masks, _ = self.load_arrays(donor)
        else:  # the donor's window over the same place of the hand (mirrored: the window mirrored too)
            y0, x0 = origin
            x0 = self.preprocess.image_size - x0 - self.crop if mirror else x0
            donor_sample, _ = self.load_crop(donor, lambda _fg: (y0, x0))
            donor_image, donor_masks = donor_sample.image, donor_sample.masks
        image, masks, _ = paste_bone(image, masks, donor_image, donor_masks, rng, self.copy_paste.classes,
                                     mirror_donor=mirror)
        return image, masks

    def load_arrays(self, index: int) -> tuple[np.ndarray, Optional[np.ndarray], tuple[int, int]]:
        """(uint8 image (S,S), bool masks (K,S,S) or None, orig_size) before enhancement/augmentation."""
        record = self.records[index]
        size = self.preprocess.image_size
        if self.cache_paths is not None:
            sample = load_or_build(self.cache_paths[index], record, size, self.class_names)
        else:
            sample = preprocess_sample(record, size, self.class_names)
        return sample.image, sample.masks, sample.orig_size

    def load_crop(self, index: int, choose: Origin) -> tuple[CachedSample, tuple[int, int]]:
        """A ``crop``² window of sample ``index`` placed by ``choose(foreground map)``, and its origin."""
        record, size = self.records[index], self.preprocess.image_size
        if self.cache_paths is not None:
            return load_window(self.cache_paths[index], record, size, self.class_names, self.crop, choose)
        return crop_sample(preprocess_sample(record, size, self.class_names), self.crop, choose)

    def _tensor(self, image: np.ndarray, origin: Optional[tuple[int, int]], mirrored: bool) -> torch.Tensor:
        """The model input; a crop's coordinate channels are those of its window in the whole image, the window
        mirrored when the augmentation mirrored the crop (a left-right flip of the crop is the mirrored window
        of the flipped whole image)."""
        if origin is None or not self.preprocess.coord_channels:
            return self.preprocess.to_tensor(image)
        size = self.preprocess.image_size
        top, left = origin
        left = size - left - image.shape[1] if mirrored else left
        return self.preprocess.to_tensor(image, origin=(top, left), whole=(size, size))

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, facts = self.records[index], self.facts[index]
        origin = None
        if self.crop is not None:
            rng, size = self._rng(index, 2), self.preprocess.image_size
            sample, origin = self.load_crop(index, lambda fg: pick_origin(fg, size, self.crop, rng))
            image, masks, orig_size = sample.image, sample.masks, sample.orig_size
        else:
            image, masks, orig_size = self.load_arrays(index)
        side = facts.side
        if self.copy_paste is not None and len(self) > 1:
            image, masks = self._paste(index, image, masks, side, origin)
        image = self.preprocess.enhance(image, image.shape[0] / self.preprocess.image_size)
        mirrored = False
        if self.transforms is not None:
            image, masks, mirrored = self.transforms(image, masks, seed=self._augment_seed(index))
            if mirrored:
                side = flip_side(side)
        sample: dict[str, Any] = {"image": self._tensor(image, origin, mirrored)}
        if self.prompt is not None and masks is not None:
            target, asked = self.prompt.draw(self.epoch, index)
            masks = self.prompt.keep(masks, target)
            sample["prompt"] = self.prompt.sentence(asked)
        if masks is not None:
            sample["masks"] = torch.from_numpy(masks.astype(np.float32))
        sample.update({"image_id": record.image_id, "image_name": record.image_name,
                       "person_id": int(record.person_id), "side": side, "meta": dict(facts.meta),
                       "orig_size": orig_size})
        if self.caption_fn is not None:
            # caption dropout, seeded like the augmentation: a resumed run drops the same captions
            dropped = self.caption_drop_p > 0 and self._rng(index, 4).random() < self.caption_drop_p
            sample["caption"] = self.caption_fn(sample, drop=True) if dropped else self.caption_fn(sample)
            if "prompt" in sample:
                sample["caption"] = with_prompt(sample["caption"], sample["prompt"])
        return sample


def _listed(record: ImageRecord, bad: Sequence[tuple[str, str]]) -> bool:
    return any(path == str(record.image_path) for path, _ in bad)


def _unreadable(record: ImageRecord, class_names: Sequence[str]) -> Optional[tuple[str, str]]:
    try:
        preprocess_sample(record, 8, class_names)  # decodes the image and rasterises the polygons, tiny
    except SAMPLE_ERRORS as err:
        return str(record.image_path), f"{type(err).__name__}: {err}"
    return None


def _drop_bad(bad: list[tuple[str, str]], skip: bool, name: str) -> list[tuple[str, str]]:
    if bad and not skip:
        listing = "; ".join(f"{p}: {why}" for p, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DatasetError(f"{len(bad)} bad sample(s) in the {name} set: {listing}{more}. "
                           f"Fix them (scripts/check_data.py) or set data.skip_bad_samples=true")
    for path, why in bad:
        logger.warning("skipping bad sample %s: %s", path, why)
    return list(bad)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors along a new batch dim; keep strings, ints, tuples and dicts as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return out
