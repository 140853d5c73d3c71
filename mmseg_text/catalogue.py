"""The class catalogue: bone names, descriptions and groups, read from a data file.

Class names live in ``data/meta/*.yaml`` and nowhere else in the code, so another label set
(another anatomy) works by pointing ``data.classes`` at another file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO_ROOT / "data" / "meta" / "hand_bones.yaml"
_ENTRY_KEYS = {"name", "description", "group"}


@dataclass(frozen=True)
class ClassCatalogue:
    """Ordered class list; the order is the channel, CSV-row and table order."""

    name: str
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    groups: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)

    def index(self, class_name: str) -> int:
        try:
            return self.names.index(class_name)
        except ValueError:
            raise KeyError(f"class {class_name!r} is not in the catalogue {self.source or self.name}") from None

    def indices_of_group(self, group: str) -> list[int]:
        return [i for i, g in enumerate(self.groups) if g == group]


def load_catalogue(path: str | Path | None = None) -> ClassCatalogue:
    """Read a catalogue YAML (``classes: [{name, description, group}, ...]``); errors name the file and entry."""
    path = Path(path) if path else DEFAULT_CATALOGUE
    if not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    if not path.exists():
        raise FileNotFoundError(f"class catalogue not found: {path}")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = doc.get("classes")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list under 'classes'")
    names, descriptions, groups = [], [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"{path}: classes[{i}] needs a 'name'")
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:  # e.g. an unquoted description with a comma, split by YAML into extra keys
            raise ValueError(f"{path}: classes[{i}] ({entry['name']}) has unknown keys {unknown}; "
                             f"allowed: {sorted(_ENTRY_KEYS)} (quote text that contains commas)")
        names.append(str(entry["name"]))
        descriptions.append(str(entry.get("description", entry["name"])))
        groups.append(str(entry.get("group", "other")))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate class names {duplicates}")
    return ClassCatalogue(
        name=str(doc.get("name", path.stem)),
        names=tuple(names),
        descriptions=tuple(descriptions),
        groups=tuple(groups),
        source=str(path),
    )
