"""Where the files are: ``ROOT/{train,test}/DCM/IDxxx/*.png`` and ``ROOT/train/outputs_json/IDxxx/*.json``.

``scan_images`` also returns what it passed over -- a folder whose name is not ``ID<number>``, a file
that is not a PNG/DICOM image, a file outside a person folder -- with the reason; ``find_images``
logs a warning for each. Hidden entries (``.DS_Store``, ``.cache``) are not data and are not listed.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".dcm")
_PERSON_DIR = re.compile(r"^ID(\d+)$")


@dataclass(frozen=True)
class ImageRecord:
    """One image on disk and, when labelled, its annotation JSON."""

    image_path: Path
    json_path: Optional[Path]
    person_id: int
    split: str  # "train" | "test" (the folder it lives in)

    @property
    def image_id(self) -> str:
        return self.image_path.stem

    @property
    def image_name(self) -> str:
        # The CSV's image_name is the file's base name (REFERENCE.md).
        return self.image_path.name


def person_id_from_dir(name: str) -> Optional[int]:
    m = _PERSON_DIR.match(name)
    return int(m.group(1)) if m else None


def person_dir_name(person_id: int) -> str:
    return f"ID{person_id:03d}"


class SkippedPath(NamedTuple):
    """A folder or file under ``DCM`` that yields no image record, and why."""

    path: Path
    reason: str


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def scan_images(root: str | Path, split: str, *, require_json: bool = False
                ) -> tuple[list[ImageRecord], list[SkippedPath]]:
    """(records, skipped): the images of ``split`` as :func:`find_images` returns them, and every
    folder or file under ``ROOT/<split>/DCM`` that was passed over, with the reason."""
    root = Path(root)
    image_root = root / split / "DCM"
    json_root = root / split / "outputs_json"
    if not image_root.is_dir():
        raise FileNotFoundError(f"no image folder {image_root} (expected ROOT/{split}/DCM/IDxxx/*.png)")
    records, skipped = [], []
    for entry in _visible(image_root):
        if not entry.is_dir():
            what = "image" if is_image_file(entry) else "file"
            skipped.append(SkippedPath(entry, f"{what} outside a person folder (expected DCM/IDxxx/)"))
            continue
        pid = person_id_from_dir(entry.name)
        if pid is None:
            images = sum(1 for p in _visible(entry) if is_image_file(p))
            skipped.append(SkippedPath(entry, f"folder name {entry.name!r} is not a person ID (ID<number>, e.g. "
                                              f"ID006): its {images} image(s) are not used"))
            continue
        for path in _visible(entry):
            if not is_image_file(path):
                kind = "folder" if path.is_dir() else f"{path.suffix or 'extension-less'} file"
                skipped.append(SkippedPath(path, f"not a {'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES)} image "
                                                 f"({kind}): not used"))
                continue
            json_path = json_root / entry.name / f"{path.stem}.json"
            if not json_path.exists():
                if require_json:
                    raise FileNotFoundError(f"{path}: no annotation {json_path}")
                json_path = None
            records.append(ImageRecord(path, json_path, pid, split))
    return sorted(records, key=lambda r: (r.person_id, r.image_path.name)), skipped


MAX_SKIP_WARNINGS = 20  # find_images logs this many skipped paths one by one, then a count


def find_images(root: str | Path, split: str, *, require_json: bool = False) -> list[ImageRecord]:
    """All images of ``split`` under ROOT, sorted by (person id, file name), with their JSON if present.

    What is passed over (see :func:`scan_images`) is logged as a warning each, naming the path;
    ``require_json`` raises for an image without an annotation.
    """
    records, skipped = scan_images(root, split, require_json=require_json)
    for path, reason in skipped[:MAX_SKIP_WARNINGS]:
        logger.warning("%s: %s", path, reason)
    if len(skipped) > MAX_SKIP_WARNINGS:
        logger.warning("... and %d more skipped path(s) under %s (python scripts/check_data.py lists them all)",
                       len(skipped) - MAX_SKIP_WARNINGS, Path(root) / split / "DCM")
    return records
