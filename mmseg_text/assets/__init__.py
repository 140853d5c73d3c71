"""Data files shipped inside the package: the hand-bone catalogue, the caption templates, the run configs
(``configs/``, also reachable from the checkout's top-level ``configs`` link) and the tiny open_clip test configs. They are package data, so a non-editable install (``pip install .``)
finds them from any working directory.

A config value such as ``data.classes`` may name a file on disk or one of these files by name
(``hand_bones`` or ``hand_bones.yaml``); :func:`resolve_data_file` decides which.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

ASSETS_DIR = Path(__file__).resolve().parent
OPEN_CLIP_CONFIG_DIR = ASSETS_DIR / "open_clip"
CONFIGS_DIR = ASSETS_DIR / "configs"


def bundled_config(value: str | Path) -> Optional[Path]:
    """``demo`` / ``demo.yaml`` -> the packaged run config of that name (``mmseg-train --config demo`` from a
    wheel); None when ``value`` is a path or names no packaged config."""
    path = Path(value)
    if len(path.parts) != 1:
        return None
    candidate = CONFIGS_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    return candidate if candidate.is_file() else None


def resolve_data_file(value: str | Path, *, what: str, base: Optional[Path] = None) -> Path:
    """A path as given (relative to ``base`` when given, else to the working directory), or a
    bundled asset by name; an unknown value is an error naming ``what`` and the bundled choices."""
    path = Path(value)
    candidates = [base / path] if base is not None and not path.is_absolute() else []
    candidates.append(path)
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    if len(path.parts) == 1:
        candidates.append(ASSETS_DIR / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    bundled = sorted(p.stem for p in ASSETS_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"{what} not found: {value} (a YAML file path, or a bundled name: {bundled})")
