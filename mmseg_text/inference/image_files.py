"""The image files a prediction reads: PNG/DICOM files under a folder tree, or one file."""
from __future__ import annotations

import logging
from pathlib import Path

from mmseg_text.data.layout import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)


def find_image_files(images: str | Path) -> list[Path]:
    """PNG/DICOM files under a folder tree (or one file); none found is an error naming the path.

    Other files in the tree (hidden ones aside) are not read: one warning says how many, with examples.
    """
    images = Path(images)
    if images.is_file():
        files = [images]
    elif images.is_dir():
        files, others = [], []
        for p in sorted(images.rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(images).parts):
                continue
            (files if p.suffix.lower() in IMAGE_SUFFIXES else others).append(p)
        if others:
            examples = ", ".join(str(p.relative_to(images)) for p in others[:3])
            logger.warning("--images %s: %d file(s) that are not %s images are not read, e.g. %s%s", images,
                           len(others), "/".join(s[1:].upper() for s in IMAGE_SUFFIXES), examples,
                           " ..." if len(others) > 3 else "")
    else:
        raise FileNotFoundError(f"--images {images}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"--images {images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files
