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
from mmseg_text.data.cache import cache_dir_error, stat_key
from mmseg_text.data.layout import ImageRecord, find_images
from mmseg_text.data.metadata import find_metadata_file, load_metadata, person_meta
from mmseg_text.data.splits import assign_folds
from mmseg_text.data.wrist import BENT_WRIST_THRESHOLD_DEG, derive_metadata
from mmseg_text.data.facts import SIDES, ImageFacts  # noqa: F401  (ImageFacts: part of the index's API)
from mmseg_text.io import atomic_write_text

logger = logging.getLogger(__name__)

class DatasetError(ValueError):
    """Samples cannot be used; the message names the files (or use data.skip_bad_samples)."""


@dataclass
class DataIndex:
    root: Path
    split: str  # 'train' | 'test'
    records: list[ImageRecord]
    facts: list[ImageFacts]  # parallel to records
    folds: Optional[np.ndarray] = None  # fold number per record (labelled split with num_folds >= 2)
    metadata: Optional[pd.DataFrame] = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out with skip_bad_samples

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
    skipped: list[tuple[str, str]] = []
    if split == "train":  # labelled: the checks of check_data, applied before anything is learnt
        records, skipped = _checked(records, catalogue, data_cfg)
    metadata = _metadata(root, data_cfg)
    derived = None
    if catalogue.hand_geometry is not None:
        derived = _derived(root, split, data_cfg, records, catalogue, progress=progress)
    facts = _facts(records, metadata, derived)
    index = DataIndex(root=root, split=split, records=records, facts=facts, metadata=metadata, skipped=skipped)
    if split == "train" and data_cfg.num_folds >= 2:
        index.folds = assign_folds(records, data_cfg.num_folds, data_cfg.split_seed, metadata=metadata, derived=derived)
    return index


def _checked(records: list[ImageRecord], catalogue: ClassCatalogue, data_cfg: Any
             ) -> tuple[list[ImageRecord], list[tuple[str, str]]]:
    """Records whose image and annotation pass ``check_data``'s per-file checks (every class present, known
    labels, polygons of >= 3 points inside the image). A failure stops the run naming the files, or, with
    ``data.skip_bad_samples``, leaves the record out (listed). Passing files are remembered in the cache
    under their (path, mtime, size) stamps, so an unchanged dataset is checked once."""
    from mmseg_text.data.checks import CheckReport, check_annotation
    from mmseg_text.data.images import ImageReadError, read_image_size

    stamp_dir = cache_dir_of(data_cfg) / "checked" if data_cfg.cache else None
    key = hashlib.sha1("\n".join([*catalogue.names] + [stat_key(r.image_path) + stat_key(r.json_path) for r in records])
                       .encode()).hexdigest()[:16]
    if stamp_dir is not None and (stamp_dir / key).exists():
        return records, []
    report = CheckReport(root=str(data_cfg.root))
    for record in records:
        if record.json_path is None:
            report.add("error", "missing_json", record.image_path, "no annotation JSON (labelled images need one)")
            continue
        try:
            size = read_image_size(record.image_path)
        except ImageReadError as err:  # its message starts with the path, which the report adds again
            report.add("error", "unreadable_image", record.image_path, str(err).split(": ", 1)[-1])
            continue
        check_annotation(record.json_path, catalogue.names, size, True, report)
    owner = {str(p): r for r in records for p in (r.image_path, r.json_path) if p is not None}
    reasons: dict[str, str] = {}  # image path -> the first problem of its image or annotation
    for issue in report.errors:
        record = owner.get(str(issue.path))
        if record is not None:
            reasons.setdefault(str(record.image_path), f"{issue.path}: {issue.message}")
    failed = list(reasons.items())
    if failed and not data_cfg.skip_bad_samples:
        listing = "; ".join(why for _, why in failed[:5]) + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else "")
        raise DatasetError(f"{len(failed)} bad training sample(s): {listing}. Fix them (mmseg-check-data "
                           f"{data_cfg.root}) or set data.skip_bad_samples=true to leave them out")
    for _, why in failed:
        logger.warning("leaving out a bad training sample: %s", why)
    if not failed and stamp_dir is not None:
        try:
            atomic_write_text(stamp_dir / key, "ok\n")
        except OSError as err:
            raise cache_dir_error(stamp_dir, err) from None
    dropped = {path for path, _ in failed}
    return [r for r in records if str(r.image_path) not in dropped], failed


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
    if data_cfg.derived_meta and split == "train":  # the CSV of the training split (mmseg-derive-meta)
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
            return pd.read_csv(cached, dtype={"image_id": str})
    skip = bool(data_cfg.skip_bad_samples)
    frame = derive_metadata(records, bones, skip_bad=skip, progress=progress)
    if cached is not None and len(frame) == len(jsons):  # a frame with skipped images is not kept
        try:
            atomic_write_text(cached, frame.to_csv(index=False))
        except OSError as err:
            raise cache_dir_error(cached.parent, err) from None
    return frame


def cache_dir_of(data_cfg: Any) -> Path:
    return Path(data_cfg.cache_dir) if data_cfg.cache_dir else Path(data_cfg.root) / ".cache"


def load_derived_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data.derived_meta: {path} not found")
    frame = pd.read_csv(path, dtype={"image_id": str})
    missing = [c for c in ("image_id", "side", "wrist_angle_deg") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: derived metadata lacks column(s) {missing}")
    if "bent_wrist" not in frame.columns:  # a hand-labelled angle table: the flag follows from the angle
        frame["bent_wrist"] = frame["wrist_angle_deg"].abs().ge(BENT_WRIST_THRESHOLD_DEG).where(frame["wrist_angle_deg"].notna())
    return frame


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def derived_by_image(derived: Optional[pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """``{image_id: {side, wrist_angle_deg, bent_wrist}}`` of a derived frame, missing values as unknown/None."""
    out = {}
    for row in (derived.to_dict("records") if derived is not None and len(derived) else []):
        side, angle, bent = row.get("side"), row.get("wrist_angle_deg"), row.get("bent_wrist")
        out[str(row["image_id"])] = {"side": side if side in SIDES else "unknown",
                                     "wrist_angle_deg": None if _missing(angle) else float(angle),
                                     "bent_wrist": None if _missing(bent) else bool(bent)}
    return out


def _facts(records: Sequence[ImageRecord], metadata: Optional[pd.DataFrame],
           derived: Optional[pd.DataFrame]) -> list[ImageFacts]:
    """Per record, once: side and the meta dict (pandas lookups per sample would cost ~1 ms)."""
    rows = derived_by_image(derived)
    unknown = {"side": "unknown", "wrist_angle_deg": None, "bent_wrist": None}
    facts = []
    for record in records:
        row = rows.get(record.image_id, unknown)
        meta = {**person_meta(metadata, record.person_id), "wrist_angle_deg": row["wrist_angle_deg"],
                "bent_wrist": row["bent_wrist"]}
        facts.append(ImageFacts(side=row["side"], meta=meta))
    return facts
