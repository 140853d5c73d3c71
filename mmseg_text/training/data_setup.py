"""The data side of a training run, built once and in one direction:

    index (records, metadata, derived facts, folds) -> captions over every image -> datasets

``build_run_data`` is what ``train`` calls under ``main_process_first`` (the main process writes the
caches, the others read them); tests can call it alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.data.copy_paste import CopyPaste
from mmseg_text.data.dataset import SegmentationDataset
from mmseg_text.data.index import DataIndex, build_index, cache_dir_of
from mmseg_text.data.preprocess import Preprocessor
from mmseg_text.data.prompts import GroupPrompt, with_prompt
from mmseg_text.text.templates import load_templates
from mmseg_text.data.transforms import Augmenter, build_train_transforms
from mmseg_text.text.caption_encoder import CaptionEncoder, build_caption_encoder
from mmseg_text.models.encoders import encoder_data_config

logger = logging.getLogger(__name__)


def build_preprocessor(cfg: Any) -> Preprocessor:
    """The data section's sizes / CLAHE / channels with the encoder's own normalisation statistics."""
    stats = encoder_data_config(cfg.model.encoder, in_chans=cfg.data.in_chans, **dict(cfg.model.encoder_kwargs))
    return Preprocessor(image_size=cfg.data.working_size, mean=tuple(stats["mean"]), std=tuple(stats["std"]),
                        clahe=cfg.data.clahe, window=cfg.data.crop_size, coord_channels=cfg.model.coord_channels)


def make_dataset(cfg: Any, index: DataIndex, catalogue: ClassCatalogue, preprocess: Preprocessor, *,
                 name: str, transforms: Optional[Augmenter] = None, caption_fn=None, augment_seed: Optional[int] = None,
                 progress: bool = True, copy_paste: Optional[CopyPaste] = None, crop: Optional[int] = None,
                 prompt: Optional[GroupPrompt] = None, caption_drop_p: float = 0.0) -> SegmentationDataset:
    data = cfg.data
    return SegmentationDataset(index.records, index.facts, class_names=catalogue.names, preprocess=preprocess,
                               labelled=index.split == "train", cache_dir=cache_dir_of(data) if data.cache else None,
                               transforms=transforms, caption_fn=caption_fn, augment_seed=augment_seed,
                               skip_bad_samples=data.skip_bad_samples, workers=data.num_workers, progress=progress,
                               name=name, copy_paste=copy_paste, crop=crop, prompt=prompt, caption_drop_p=caption_drop_p)


@dataclass
class RunData:
    index: DataIndex
    train: SegmentationDataset
    val: SegmentationDataset
    preprocess: Preprocessor
    text: Optional[CaptionEncoder]


def build_run_data(cfg: Any, catalogue: ClassCatalogue, *, progress: bool = True) -> RunData:
    index = build_index(cfg.data, catalogue, progress=progress)
    train_index, val_index = index.fold_split(cfg.data.fold)
    text = build_caption_encoder(cfg, catalogue, progress=progress)
    prompts = _prompts(cfg, catalogue)
    caption_fn = None
    if text is not None:  # one caption function over every image of the run (the placebo pairs across all)
        caption_fn = text.caption_fn(index.meta_by_image(), index.person_by_image())
        suffixes = [with_prompt("", s) for s in prompts[0].sentences()] if prompts else [""]
        text.prepare_training(caption_fn, index, suffixes=suffixes, with_dropped=cfg.text.drop_p > 0)
    preprocess = build_preprocessor(cfg)
    train = make_dataset(cfg, train_index, catalogue, preprocess, name="train", transforms=build_train_transforms(cfg.data),
                         caption_fn=caption_fn, augment_seed=cfg.train.seed, progress=progress,
                         copy_paste=CopyPaste.from_config(cfg.data, catalogue.names, catalogue.groups),
                         crop=cfg.data.crop_size, prompt=prompts[0] if prompts else None,
                         caption_drop_p=cfg.text.drop_p)
    # validation sees whole working-size images, tiled into windows when the model trains on crops
    val = make_dataset(cfg, val_index, catalogue, preprocess, name="validation", caption_fn=caption_fn, progress=progress,
                       prompt=prompts[1] if prompts else None)
    return RunData(index=index, train=train, val=val, preprocess=preprocess, text=text)


def _prompts(cfg: Any, catalogue: ClassCatalogue) -> Optional[tuple[GroupPrompt, GroupPrompt]]:
    """(training, validation) prompts of the positive control; validation's are the same for every run."""
    if not cfg.data.prompted_groups:
        return None
    request = load_templates(cfg.text.templates).request  # the wording is the caption templates'
    return (GroupPrompt(tuple(catalogue.groups), seed=cfg.train.seed, request=request, shuffled=cfg.text.shuffle),
            GroupPrompt(tuple(catalogue.groups), seed=cfg.data.split_seed, request=request, shuffled=cfg.text.shuffle))
