"""The data index of a run: records, metadata table, derived facts and folds, built once.

Everything the datasets and the captions need about an image, before any pixel is read, is decided
here, in one direction: files on disk -> records -> metadata rows -> derived side/wrist angle (only for a
catalogue that declares ``derived.hand_geometry``) -> per-image facts -> one fold assignment. The engine
then builds captions from the index and datasets from a fold of it.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.data.cache import stat_key
from mmseg_text.data.layout import ImageRecord, find_images
from mmseg_text.data.metadata import find_metadata_file, load_metadata, person_meta
from mmseg_text.data.splits import assign_folds
from mmseg_text.data.wrist import DERIVED_COLUMNS, derive_metadata
from mmseg_text.io import atomic_write_text

logger = logging.getLogger(__name__)

SIDES = ("left", "right", "unknown")


@dataclass(frozen=True)
class ImageFacts:
    """What is known of one image before augmentation: hand side and the caption's metadata."""

    side: str = "unknown"  # 'left' | 'right' | 'unknown' (always unknown without hand geometry)
    meta: dict[str, Any] = field(default_factory=dict)  # age, sex, weight, height, wrist_angle_deg, bent_wrist


@dataclass
class DataIndex:
    root: Path
    split: str  # 'train' | 'test'
    records: list[ImageRecord]
    facts: list[ImageFacts]  # parallel to records
    folds: Optional[np.ndarray] = None  # fold number per record (labelled split with num_folds >= 2)
    metadata: Optional[pd.DataFrame] = None

    def __len__(self) -> int:
        return len(self.records)

    def fold_split(self, fold: int) -> tuple["DataIndex", "DataIndex"]:
        """(train, validation) sub-indices for validation fold ``fold``; no person is in both."""
        if self.folds is None:
            raise ValueError(f"{self.root}/{self.split}: the index has no folds (a labelled split with num_folds >= 2)")
        return self.select(np.flatnonzero(self.folds != fold)), self.select(np.flatnonzero(self.folds == fold))

    def select(self, positions: Sequence[int]) -> "DataIndex":
        positions = [int(i) for i in positions]
        return replace(self, records=[self.records[i] for i in positions], facts=[self.facts[i] for i in positions],
                       folds=None if self.folds is None else self.folds[positions])

    def meta_by_image(self) -> dict[str, dict[str, Any]]:
        return {r.image_id: f.meta for r, f in zip(self.records, self.facts)}

    def person_by_image(self) -> dict[str, int]:
        return {r.image_id: r.person_id for r in self.records}


def build_index(data_cfg: Any, catalogue: ClassCatalogue, *, split: str = "train", progress: bool = True) -> DataIndex:
    """Scan ``data_cfg.root/<split>`` and attach metadata, derived facts and (train) folds."""
    root = Path(data_cfg.root)
    records = find_images(root, split)
    if not records:
        raise FileNotFoundError(f"no images under {root / split / 'DCM'} (expected IDxxx/*.png or *.dcm)")
    metadata = _metadata(root, data_cfg)
    derived = None
    if catalogue.hand_geometry is not None:
        derived = _derived(root, split, data_cfg, records, catalogue, progress=progress)
    facts = _facts(records, metadata, derived)
    index = DataIndex(root=root, split=split, records=records, facts=facts, metadata=metadata)
    if split == "train" and data_cfg.num_folds >= 2:
        index.folds = assign_folds(records, data_cfg.num_folds, data_cfg.split_seed, metadata=metadata, derived=derived)
    return index


def _metadata(root: Path, data_cfg: Any) -> Optional[pd.DataFrame]:
    path = find_metadata_file(root, data_cfg.meta_file)
    if path is None:
        logger.warning("%s: no meta_data.xlsx/.csv; age/sex/weight/height will be unknown", root)
        return None
    return load_metadata(path)


def _derived(root: Path, split: str, data_cfg: Any, records: Sequence[ImageRecord], catalogue: ClassCatalogue, *,
             progress: bool) -> Optional[pd.DataFrame]:
    """Side / wrist angle per image: ``data.derived_meta`` CSV, else computed from the annotations.

    The computed frame is kept in ``<cache_dir>/derived/`` under a hash of the annotation files'
    identities (path, mtime, size) and of the bones used. None when no record has an annotation
    (unlabelled test images: their facts come from a first prediction pass).
    """
    if data_cfg.derived_meta:
        return load_derived_csv(data_cfg.derived_meta)
    jsons = sorted(str(r.json_path) for r in records if r.json_path is not None)
    if not jsons:
        return None
    bones = catalogue.hand_geometry
    cached = None
    if data_cfg.cache:
        key = hashlib.sha1("\n".join([split, str(root.resolve()), repr(bones)] + [stat_key(j) for j in jsons]).encode())
        cached = cache_dir_of(data_cfg) / "derived" / f"{split}-{key.hexdigest()[:16]}.csv"
        if cached.exists():
            return pd.read_csv(cached)
    skip = bool(data_cfg.skip_bad_samples)
    frame = derive_metadata(records, bones, skip_bad=skip, progress=progress)
    if cached is not None and len(frame) == len(jsons):  # a frame with skipped images is not kept
        atomic_write_text(cached, frame.to_csv(index=False))
    return frame


def cache_dir_of(data_cfg: Any) -> Path:
    return Path(data_cfg.cache_dir) if data_cfg.cache_dir else Path(data_cfg.root) / ".cache"


def load_derived_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data.derived_meta: {path} not found")
    frame = pd.read_csv(path)
    missing = [c for c in DERIVED_COLUMNS if c != "person_id" and c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: derived metadata lacks column(s) {missing}")
    return frame


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _facts(records: Sequence[ImageRecord], metadata: Optional[pd.DataFrame],
           derived: Optional[pd.DataFrame]) -> list[ImageFacts]:
    """Per record, once: side and the meta dict (pandas lookups per sample would cost ~1 ms)."""
    rows = {str(r["image_id"]): r for r in derived.to_dict("records")} if derived is not None and len(derived) else {}
    facts = []
    for record in records:
        row = rows.get(record.image_id, {})
        side = row.get("side")
        meta = person_meta(metadata, record.person_id)
        angle, bent = row.get("wrist_angle_deg"), row.get("bent_wrist")
        meta["wrist_angle_deg"] = None if _missing(angle) else float(angle)
        meta["bent_wrist"] = None if _missing(bent) else bool(bent)
        facts.append(ImageFacts(side=side if side in SIDES else "unknown", meta=meta))
    return facts
