"""Where the files are: ``ROOT/{train,test}/DCM/IDxxx/*.png`` and ``ROOT/train/outputs_json/IDxxx/*.json``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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


def find_images(root: str | Path, split: str, *, require_json: bool = False) -> list[ImageRecord]:
    """All images of ``split`` under ROOT, sorted by (person id, file name), with their JSON if present.

    Images outside an ``IDxxx`` folder are ignored; ``require_json`` raises for an image without one.
    """
    root = Path(root)
    image_root = root / split / "DCM"
    json_root = root / split / "outputs_json"
    if not image_root.is_dir():
        raise FileNotFoundError(f"no image folder {image_root} (expected ROOT/{split}/DCM/IDxxx/*.png)")
    records = []
    for person_dir in sorted(p for p in image_root.iterdir() if p.is_dir()):
        pid = person_id_from_dir(person_dir.name)
        if pid is None:
            continue
        for image_path in sorted(p for p in person_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            json_path = json_root / person_dir.name / f"{image_path.stem}.json"
            if not json_path.exists():
                if require_json:
                    raise FileNotFoundError(f"{image_path}: no annotation {json_path}")
                json_path = None
            records.append(ImageRecord(image_path, json_path, pid, split))
    return sorted(records, key=lambda r: (r.person_id, r.image_path.name))
