"""Dataset health check: every problem that would otherwise surface mid-training, with its file.

``check_dataset(root)`` decodes every image and parses every annotation, and reports, grouped by
kind: unreadable/truncated images, JSON that does not parse, unknown labels, missing labels (train
images need every catalogue class), duplicate labels, polygons of < 3 points or outside the image,
train images without JSON (and JSON without image), person IDs without metadata (error) and metadata
rows without images (warning), person folders whose name is not ``ID<number>`` (error: their images
would be dropped), files that are not images (warning), and metadata values that are not clean,
plausible numbers (warning: they are read as missing). ``scripts/check_data.py`` prints it and exits
1 on errors.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.data.cache import process_pool
from mmseg_text.data.images import ImageReadError, read_image
from mmseg_text.data.layout import ImageRecord, person_id_from_dir, scan_images
from mmseg_text.data.metadata import MetadataError, find_metadata_file, load_metadata, reconcile_ids

# kind -> heading in the printed report (the order is the report's order)
KINDS = {
    "unreadable_image": "Unreadable or truncated images",
    "missing_json": "Train images without annotation JSON",
    "bad_json": "Annotation JSON that does not parse or is malformed",
    "unknown_label": "Labels not in the class catalogue",
    "duplicate_label": "Labels that appear twice in one file",
    "missing_labels": "Train annotations missing classes",
    "bad_polygon": "Polygons with fewer than 3 points (or non-numeric points)",
    "polygon_outside": "Polygons with points outside the image",
    "metadata_file": "Metadata table problems",
    "metadata_value": "Metadata values that are not clean, plausible numbers (read as missing)",
    "missing_metadata": "Person IDs with images but no metadata",
    "layout": "Folder layout problems",
    "stray_file": "Files that are not images (not used)",
    "orphan_json": "Annotation JSON without an image",
    "metadata_without_images": "Metadata IDs without images",
}


@dataclass
class Issue:
    severity: str  # "error" | "warning"
    kind: str  # a key of KINDS
    path: str  # the file (or folder) at fault
    message: str


@dataclass
class CheckReport:
    root: str
    issues: list[Issue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, severity: str, kind: str, path: str | Path, message: str) -> None:
        self.issues.append(Issue(severity, kind, str(path), message))

    def by_kind(self) -> dict[str, list[Issue]]:
        grouped: dict[str, list[Issue]] = {}
        for kind in KINDS:
            found = [i for i in self.issues if i.kind == kind]
            if found:
                grouped[kind] = found
        return grouped

    def to_dict(self) -> dict:
        return {"root": self.root, "ok": self.ok, "counts": self.counts, "num_errors": len(self.errors),
                "num_warnings": len(self.warnings), "issues": [asdict(i) for i in self.issues]}

    def format(self, max_per_kind: int = 50) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        lines = [f"Data check of {self.root}: {counts}"]
        for kind, issues in self.by_kind().items():
            severity = "ERROR" if any(i.severity == "error" for i in issues) else "warning"
            lines.append(f"\n[{severity}] {KINDS[kind]} ({len(issues)}):")
            for issue in issues[:max_per_kind]:
                lines.append(f"  {issue.path}: {issue.message}")
            if len(issues) > max_per_kind:
                lines.append(f"  ... and {len(issues) - max_per_kind} more")
        verdict = ("OK: no errors" if self.ok else f"FAILED: {len(self.errors)} error(s)")
        lines.append(f"\n{verdict}, {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def _image_shape(path: Path) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    try:
        image = read_image(path)
    except ImageReadError as err:
        return None, str(err)
    return (int(image.shape[0]), int(image.shape[1])), None


def check_annotation(path: Path, class_names: Sequence[str], image_size: Optional[tuple[int, int]],
                     require_all: bool, report: CheckReport) -> None:
    """Append every problem of one annotation file to ``report`` (does not stop at the first)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        report.add("error", "bad_json", path, f"cannot parse JSON ({err})")
        return
    entries = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        report.add("error", "bad_json", path, "missing 'annotations' list")
        return
    known, seen = set(class_names), set()
    for i, entry in enumerate(entries):
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(label, str):
            report.add("error", "bad_json", path, f"annotations[{i}] has no 'label'")
            continue
        if label not in known:
            report.add("error", "unknown_label", path, f"annotations[{i}] has unknown label {label!r}")
        elif label in seen:
            report.add("error", "duplicate_label", path, f"label {label!r} appears twice")
        seen.add(label)
        try:
            points = np.asarray(entry.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            report.add("error", "bad_polygon", path, f"annotations[{i}] ({label}) has non-numeric points")
            continue
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            n = len(points) if points.ndim >= 1 else 0
            report.add("error", "bad_polygon", path,
                       f"annotations[{i}] ({label}) has {n} point(s); a polygon needs >= 3 [x, y]")
            continue
        if image_size is not None:
            h, w = image_size
            outside = (points[:, 0] < 0) | (points[:, 1] < 0) | (points[:, 0] > w - 1) | (points[:, 1] > h - 1)
            if outside.any():
                report.add("error", "polygon_outside", path,
                           f"annotations[{i}] ({label}): {int(outside.sum())} point(s) outside the {w}x{h} image")
    if require_all:
        missing = [c for c in class_names if c not in seen]
        if missing:
            report.add("error", "missing_labels", path, f"missing {len(missing)} class(es): {missing}")


def _orphan_jsons(root: Path, split: str, records: Iterable[ImageRecord], report: CheckReport) -> list[Path]:
    """JSON files of ``ID<number>`` folders without their image; a JSON folder with another name is
    reported (as a layout error naming it) instead of listing its files as orphans."""
    json_root = root / split / "outputs_json"
    if not json_root.is_dir():
        return []
    used = {r.json_path.resolve() for r in records if r.json_path is not None}
    orphans = []
    for folder in sorted(p for p in json_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        jsons = sorted(folder.glob("*.json"))
        if person_id_from_dir(folder.name) is None:
            report.add("error", "layout", folder, f"folder name {folder.name!r} is not a person ID (ID<number>, "
                                                  f"e.g. ID006): its {len(jsons)} annotation(s) are not used")
            continue
        orphans += [p for p in jsons if p.resolve() not in used]
    return orphans


def check_dataset(root: str | Path, catalogue: Optional[ClassCatalogue] = None, *,
                  meta_file: Optional[str | Path] = None, splits: Sequence[str] = ("train", "test"),
                  workers: int = 1) -> CheckReport:
    """Check ROOT (layout of REFERENCE.md) and return every problem found, grouped by kind."""
    root = Path(root)
    catalogue = catalogue or load_catalogue()
    names = tuple(catalogue.names)
    report = CheckReport(str(root))
    records: list[ImageRecord] = []
    for split in splits:
        try:
            found, skipped = scan_images(root, split)
        except FileNotFoundError as err:
            report.add("error" if split == "train" else "warning", "layout", root / split, str(err))
            continue
        report.counts[f"{split} images"] = len(found)
        records += found
        image_root = root / split / "DCM"
        for path, reason in skipped:
            if path.parent == image_root and path.is_dir():  # a misnamed person folder: its images are lost
                report.add("error", "layout", path, reason)
            else:
                report.add("warning", "stray_file", path, reason)
        strays = sum(1 for path, _ in skipped if not (path.parent == image_root and path.is_dir()))
        if strays:
            report.counts[f"{split} files skipped"] = strays
        for json_path in _orphan_jsons(root, split, found, report):
            report.add("warning", "orphan_json", json_path, "no image with this name in the matching DCM folder")

    paths = [r.image_path for r in records]
    if workers > 1 and len(paths) > 1:
        with process_pool(workers) as pool:
            shapes = list(pool.map(_image_shape, paths, chunksize=8))
    else:
        shapes = [_image_shape(p) for p in paths]
    for record, (shape, error) in zip(records, shapes):
        if error is not None:
            report.add("error", "unreadable_image", record.image_path, error.split(": ", 1)[-1])
        if record.json_path is None:
            if record.split == "train":
                expected = root / "train" / "outputs_json" / record.image_path.parent.name / f"{record.image_id}.json"
                report.add("error", "missing_json", record.image_path, f"no {expected}")
            continue
        check_annotation(record.json_path, names, shape, require_all=record.split == "train", report=report)

    _check_metadata(root, meta_file, records, report)
    return report


def _check_metadata(root: Path, meta_file: Optional[str | Path], records: Sequence[ImageRecord],
                    report: CheckReport) -> None:
    try:
        path = find_metadata_file(root, meta_file)
    except FileNotFoundError as err:
        report.add("error", "metadata_file", meta_file or root, str(err))
        return
    if path is None:
        report.add("error", "metadata_file", root, "no meta_data.xlsx or meta_data.csv")
        return
    try:
        meta = load_metadata(path, log_problems=False)  # reported here instead
    except MetadataError as err:
        report.add("error", "metadata_file", path, str(err).split(": ", 1)[-1])
        return
    report.counts["metadata rows"] = len(meta)
    for problem in meta.attrs.get("problems", []):
        report.add("warning", "metadata_value", path, str(problem))
    folders: dict[int, Path] = {}
    for r in records:
        folders.setdefault(r.person_id, r.image_path.parent)
    reconciled = reconcile_ids(meta, folders)
    for pid in reconciled.images_without_metadata:
        report.add("error", "missing_metadata", folders[pid], f"person ID {pid} has images but no row in {path.name}")
    for pid in reconciled.metadata_without_images:
        report.add("warning", "metadata_without_images", path, f"ID {pid} has a metadata row but no images")

