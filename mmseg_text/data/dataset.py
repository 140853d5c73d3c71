"""HandXrayDataset: images, multi-label masks, per-person metadata and hand side as one sample dict.

The sample dict is the contract of docs/DESIGN.md. Samples come from the preprocessing cache
(``data.cache``, default) or are decoded on the fly; either way the image is already at
``image_size``² when augmentation runs. The caption is built last, from the augmented sample, so
a horizontal flip that turned a right hand into a left one is described as left.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.cache import SAMPLE_ERRORS, build_cache, load_or_build, preprocess_sample, stat_key
from mmseg_text.data.images import read_image
from mmseg_text.data.layout import ImageRecord, find_images
from mmseg_text.data.metadata import find_metadata_file, load_metadata, person_meta
from mmseg_text.data.splits import fold_indices
from mmseg_text.data.transforms import (Augmenter, build_eval_transforms, build_train_transforms, build_transforms,
                                        flip_side)
from mmseg_text.io import atomic_write_text

logger = logging.getLogger(__name__)

MODES = ("train", "val", "test")
SIDES = ("left", "right", "unknown")
# ImageNet statistics (timm backbones); a grayscale value is repeated into every channel first.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


class DatasetError(RuntimeError):
    """Samples cannot be loaded; the message names the files (or use data.skip_bad_samples)."""


def apply_clahe(image: np.ndarray) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES).apply(image)


def normalisation_stats(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std): ImageNet's for 3 channels, their average repeated otherwise."""
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (float(np.mean(IMAGENET_MEAN)),) * in_chans, (float(np.mean(IMAGENET_STD)),) * in_chans


def image_to_tensor(image: np.ndarray, in_chans: int = 3) -> torch.Tensor:
    """uint8 grayscale (H, W) -> normalised float32 (in_chans, H, W).

    Computed in NumPy: small torch ops in a busy process pay OpenMP thread start-up (~10 ms each).
    """
    mean, std = normalisation_stats(in_chans)
    gray = np.asarray(image, dtype=np.float32) * np.float32(1.0 / 255.0)
    out = np.empty((in_chans,) + gray.shape, dtype=np.float32)
    for c in range(in_chans):
        np.multiply(gray, np.float32(1.0 / std[c]), out=out[c])
        out[c] -= np.float32(mean[c] / std[c])
    return torch.from_numpy(out)


def load_derived_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"derived metadata CSV not found: {path}")
    frame = pd.read_csv(path)
    missing = [c for c in ("image_id", "side", "wrist_angle_deg", "bent_wrist") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: derived metadata lacks column(s) {missing}")
    return frame


def _none_if_missing(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def load_dataset_metadata(root: str | Path, cfg: Any) -> Optional[pd.DataFrame]:
    """Metadata of ``cfg.meta_file`` or ROOT/meta_data.xlsx|.csv; None (logged) when there is none."""
    cfg = getattr(cfg, "data", cfg)
    path = find_metadata_file(root, cfg.meta_file)
    if path is None:
        logger.warning("%s: no meta_data.xlsx/.csv; age/sex/weight/height will be None", root)
        return None
    return load_metadata(path)


def cache_dir_of(root: str | Path, cfg: Any) -> Path:
    cfg = getattr(cfg, "data", cfg)
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(root) / ".cache"


def load_derived(root: str | Path, split: str, cfg: Any, records: Sequence[ImageRecord], *,
                 skip_bad_samples: bool = False) -> Optional[pd.DataFrame]:
    """Side / wrist angle per image: ``cfg.derived_meta`` CSV, else computed from the annotations.

    The computed frame is kept in ``<cache_dir>/derived/`` under a hash of the annotation files'
    identities (path, mtime, size), when ``cfg.cache`` is on. Returns None when no record has an
    annotation (unlabelled test images: side 'unknown').
    """
    cfg = getattr(cfg, "data", cfg)
    if cfg.derived_meta:
        return load_derived_csv(cfg.derived_meta)
    if not any(r.json_path is not None for r in records):
        return None
    cached = None
    if cfg.cache:
        jsons = sorted(str(r.json_path) for r in records if r.json_path is not None)
        key = hashlib.sha1("\n".join([split, str(Path(root).resolve())] + [stat_key(j) for j in jsons]).encode())
        cached = cache_dir_of(root, cfg) / "derived" / f"{split}-{key.hexdigest()[:16]}.csv"
        if cached.exists():
            return pd.read_csv(cached)
    from mmseg_text.data.wrist import derive_metadata  # lazy: only labelled data needs the polygons

    try:
        frame = derive_metadata(root, split)
    except (ValueError, OSError) as err:  # AnnotationError and WristGeometryError are ValueErrors
        if not skip_bad_samples:
            raise
        logger.warning("deriving side/wrist angle under %s failed (%s); deriving image by image", root, err)
        return _derive_each(records)  # not cached: the bad files should be fixed
    if cached is not None:
        atomic_write_text(cached, frame.to_csv(index=False))
    return frame


def _derive_each(records: Sequence[ImageRecord]) -> pd.DataFrame:
    """``derive_metadata`` one record at a time; an image whose polygons fail gets no row (logged)."""
    from mmseg_text.data.wrist import (BENT_WRIST_THRESHOLD_DEG, DERIVED_COLUMNS, hand_side_from_polygons,
                                       wrist_angle_from_polygons)

    rows = []
    for record in records:
        if record.json_path is None:
            continue
        try:
            polygons = load_annotation(record.json_path)
            angle = wrist_angle_from_polygons(polygons)
            side = hand_side_from_polygons(polygons)
        except (ValueError, OSError) as err:
            logger.warning("%s: no side/wrist angle (%s)", record.json_path, err)
            continue
        rows.append({"image_id": record.image_id, "person_id": record.person_id, "side": side,
                     "wrist_angle_deg": round(angle, 2), "bent_wrist": abs(angle) >= BENT_WRIST_THRESHOLD_DEG})
    return pd.DataFrame(rows, columns=DERIVED_COLUMNS)


class HandXrayDataset(Dataset):
    """Samples of ROOT/train (modes 'train', 'val': the complementary folds) or ROOT/test.

    ``indices`` selects positions of ``find_images(root, 'train')`` (or of ``records`` when given);
    with neither, train/val use fold ``cfg.fold`` of ``fold_indices``. ``transforms`` is an
    :class:`Augmenter` (or a list of augmentation specs). ``metadata`` is a ``load_metadata`` frame
    (default: ROOT/meta_data.xlsx or ``cfg.meta_file``); ``derived`` a ``wrist.derive_metadata``
    frame (default: ``cfg.derived_meta`` CSV, else computed from the annotations when there are any).
    """

    def __init__(self, root: str | Path, mode: str, cfg: Any, catalogue: ClassCatalogue, *,
                 indices: Optional[Sequence[int]] = None, records: Optional[Sequence[ImageRecord]] = None,
                 transforms: Optional[Augmenter | Sequence[dict]] = None,
                 caption_fn: Optional[Callable[[dict], str]] = None,
                 metadata: Optional[pd.DataFrame] = None, derived: Optional[pd.DataFrame] = None,
                 skip_bad_samples: Optional[bool] = None, progress: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.cfg = getattr(cfg, "data", cfg)
        self.root = Path(root)
        self.mode = mode
        self.catalogue = catalogue
        self.class_names = tuple(catalogue.names)
        self.image_size = int(self.cfg.image_size)
        self.in_chans = int(self.cfg.in_chans)
        self.caption_fn = caption_fn
        self.augment_seed: Optional[int] = None  # see set_epoch
        self.epoch = 0
        self.transforms = build_transforms(transforms) if isinstance(transforms, (list, tuple)) else transforms
        self.skip_bad = bool(self.cfg.skip_bad_samples if skip_bad_samples is None else skip_bad_samples)
        self.skipped: list[tuple[str, str]] = []
        split = "test" if mode == "test" else "train"

        all_records = list(records) if records is not None else find_images(self.root, split)
        self.metadata = metadata if metadata is not None else load_dataset_metadata(self.root, self.cfg)
        self.derived = (derived if derived is not None
                        else load_derived(self.root, split, self.cfg, all_records, skip_bad_samples=self.skip_bad))
        if indices is not None:
            all_records = [all_records[int(i)] for i in indices]
        elif mode in ("train", "val") and records is None:
            train_idx, val_idx = fold_indices(all_records, self.cfg.num_folds, self.cfg.fold, self.cfg.split_seed,
                                              metadata=self.metadata, derived=self.derived)
            all_records = [all_records[int(i)] for i in (train_idx if mode == "train" else val_idx)]

        bad: list[tuple[str, str]] = []
        if mode in ("train", "val"):
            bad += [(str(r.image_path), "no annotation JSON (train images need labels)")
                    for r in all_records if r.json_path is None]
            unlabelled = {b[0] for b in bad}
            all_records = [r for r in all_records if str(r.image_path) not in unlabelled]
        self.cache_paths: Optional[list[Optional[Path]]] = None
        self.cache_report = None
        if self.cfg.cache:
            self.cache_report = build_cache(all_records, cache_dir=cache_dir_of(self.root, self.cfg),
                                            image_size=self.image_size, class_names=self.class_names,
                                            workers=int(self.cfg.num_workers), progress=progress)
            bad += self.cache_report.failed
            self.cache_paths = self.cache_report.paths
        elif self.skip_bad:
            bad += [b for b in (self._validate(r) for r in all_records) if b is not None]
        self._drop_bad(all_records, bad)
        self._index_derived()

    # ---- construction helpers -------------------------------------------------------------
    def _validate(self, record: ImageRecord) -> Optional[tuple[str, str]]:
        try:
            read_image(record.image_path)
            if record.json_path is not None:
                load_annotation(record.json_path, known_labels=self.class_names)
        except SAMPLE_ERRORS as err:
            return str(record.image_path), f"{type(err).__name__}: {err}"
        return None

    def _drop_bad(self, records: list[ImageRecord], bad: list[tuple[str, str]]) -> None:
        if bad and not self.skip_bad:
            listing = "; ".join(f"{p}: {why}" for p, why in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise DatasetError(f"{len(bad)} bad sample(s) in {self.mode} set: {listing}{more}. "
                               f"Fix them (scripts/check_data.py) or set data.skip_bad_samples=true")
        bad_paths = {p for p, _ in bad}
        keep = [i for i, r in enumerate(records) if str(r.image_path) not in bad_paths]
        self.records = [records[i] for i in keep]
        if self.cache_paths is not None:
            self.cache_paths = [self.cache_paths[i] for i in keep]
        self.skipped = list(bad)
        for path, why in bad:
            logger.warning("skipping bad sample %s: %s", path, why)
        if bad:
            logger.warning("%s set: skipped %d bad sample(s), kept %d", self.mode, len(bad), len(self.records))

    def _index_derived(self) -> None:
        """Per record, once: side and the meta dict (pandas lookups per sample would cost ~1 ms)."""
        by_id: dict[str, dict] = {}
        if self.derived is not None and len(self.derived):
            for row in self.derived.to_dict("records"):
                by_id[str(row["image_id"])] = row
        self._sides: list[str] = []
        self._metas: list[dict[str, Any]] = []
        for record in self.records:
            row = by_id.get(record.image_id, {})
            side = _none_if_missing(row.get("side"))
            self._sides.append(side if side in SIDES else "unknown")
            meta = person_meta(self.metadata, record.person_id)
            angle = _none_if_missing(row.get("wrist_angle_deg"))
            bent = _none_if_missing(row.get("bent_wrist"))
            meta["wrist_angle_deg"] = None if angle is None else float(angle)
            meta["bent_wrist"] = None if bent is None else bool(bent)
            self._metas.append(meta)

    # ---- samples ----------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Augmentation of sample i in epoch e is drawn from seed (augment_seed, e, i) when
        ``augment_seed`` is set: the same whichever worker, process or resumed run loads it."""
        self.epoch = int(epoch)

    def _augment_seed(self, index: int) -> Optional[int]:
        if self.augment_seed is None:
            return None
        return int(np.random.SeedSequence([self.augment_seed, self.epoch, index]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.records)

    def side_of(self, index: int) -> str:
        """'left' | 'right' | 'unknown' of record ``index`` before augmentation."""
        return self._sides[index]

    def meta_of(self, index: int) -> dict[str, Any]:
        """age, sex, weight, height, wrist_angle_deg, bent_wrist of record ``index`` (None when missing)."""
        return dict(self._metas[index])

    def load_arrays(self, index: int) -> tuple[np.ndarray, Optional[np.ndarray], tuple[int, int]]:
        """(uint8 image (S,S), bool masks (K,S,S) or None, orig_size) before CLAHE/augmentation."""
        record = self.records[index]
        if self.cache_paths is not None:
            sample = load_or_build(self.cache_paths[index], record, self.image_size, self.class_names)
        else:
            sample = preprocess_sample(record, self.image_size, self.class_names)
        return sample.image, sample.masks, sample.orig_size

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image, masks, orig_size = self.load_arrays(index)
        if self.cfg.clahe:
            image = apply_clahe(image)
        side = self.side_of(index)
        if self.transforms is not None:
            image, masks, mirrored = self.transforms(image, masks, seed=self._augment_seed(index))
            if mirrored:
                side = flip_side(side)
        sample: dict[str, Any] = {"image": image_to_tensor(image, self.in_chans)}
        if masks is not None:
            sample["masks"] = torch.from_numpy(masks.astype(np.float32))
        sample.update({
            "image_id": record.image_id,
            "image_name": record.image_name,
            "person_id": int(record.person_id),
            "side": side,
            "meta": self.meta_of(index),
            "orig_size": orig_size,
        })
        if self.caption_fn is not None:
            sample["caption"] = self.caption_fn(sample)
        return sample


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors along a new batch dim; keep strings, ints, tuples and dicts as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
    return out


def build_datasets(cfg: Any, catalogue: ClassCatalogue, *, caption_fn: Optional[Callable[[dict], str]] = None,
                   progress: bool = True) -> tuple[HandXrayDataset, HandXrayDataset]:
    """(train, val) datasets of fold ``cfg.data.fold``; metadata, derived frame and split computed once."""
    data_cfg = getattr(cfg, "data", cfg)
    skip = bool(data_cfg.skip_bad_samples)
    root = Path(data_cfg.root)
    records = find_images(root, "train")
    metadata = load_dataset_metadata(root, data_cfg)
    derived = load_derived(root, "train", data_cfg, records, skip_bad_samples=skip)
    train_idx, val_idx = fold_indices(records, data_cfg.num_folds, data_cfg.fold, data_cfg.split_seed,
                                      metadata=metadata, derived=derived)
    common = dict(caption_fn=caption_fn, metadata=metadata, derived=derived, skip_bad_samples=skip, progress=progress)
    train_ds = HandXrayDataset(root, "train", data_cfg, catalogue, records=[records[i] for i in train_idx],
                               transforms=build_train_transforms(data_cfg), **common)
    val_ds = HandXrayDataset(root, "val", data_cfg, catalogue, records=[records[i] for i in val_idx],
                             transforms=build_eval_transforms(data_cfg), **common)
    return train_ds, val_ds
