"""The class catalogue: class names, descriptions, groups and derivable facts, read from a data file.

Class names live in catalogue files (the hand's is bundled: ``mmseg_text/assets/hand_bones.yaml``)
and nowhere else in the code. Anything anatomy-specific is declared there too: the hand catalogue's
``derived.hand_geometry`` names the three bones that give hand side and wrist angle. Another label
set, another anatomy, works by pointing ``data.classes`` at another file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from mmseg_text.assets import resolve_data_file

DEFAULT_CATALOGUE = "hand_bones"
_ENTRY_KEYS = {"name", "description", "group", "attached_to"}
_HAND_GEOMETRY_KEYS = ("radius", "ulna", "middle_metacarpal")
_DERIVED_KINDS = {"hand_geometry"}


@dataclass(frozen=True)
class HandGeometryBones:
    """The bones whose outlines give hand side and wrist angle (see ``data/wrist.py``)."""

    radius: str
    ulna: str
    middle_metacarpal: str

    def names(self) -> tuple[str, str, str]:
        return self.radius, self.ulna, self.middle_metacarpal


@dataclass(frozen=True)
class FactSubgroup:
    """Images split by a derived yes/no fact, for subgroup Dice: e.g. ``bent_wrist`` -> bent / straight."""

    fact: str  # the key in an image's facts (derived-meta CSV column, caption meta)
    labels: tuple[tuple[str, bool], ...]  # (label, value) per subgroup, in table order


# What each kind of derived facts lets a report split images by.
_SUBGROUPS_OF_DERIVED = {"hand_geometry": (FactSubgroup("bent_wrist", (("bent", True), ("straight", False))),)}


@dataclass(frozen=True)
class ClassCatalogue:
    """Ordered class list; the order is the channel, CSV-row and table order."""

    name: str
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    groups: tuple[str, ...]
    hand_geometry: Optional[HandGeometryBones] = None  # None: no side / wrist angle for this anatomy
    source: str = ""
    # per class, the index of the bone it articulates with towards the body (``attached_to``), or None: the
    # "attached" post-processing rule keeps the components of a class that touch that bone (postprocess.py)
    attached_to: tuple[Optional[int], ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    @property
    def group_names(self) -> tuple[str, ...]:
        """The distinct groups, in catalogue order (the columns of grouped tables)."""
        return tuple(dict.fromkeys(self.groups))

    @property
    def fact_subgroups(self) -> tuple[FactSubgroup, ...]:
        """The image subgroups the declared derived facts give (none without ``derived``)."""
        return _SUBGROUPS_OF_DERIVED["hand_geometry"] if self.hand_geometry is not None else ()

    def index(self, class_name: str) -> int:
        try:
            return self.names.index(class_name)
        except ValueError:
            raise KeyError(f"class {class_name!r} is not in the catalogue {self.source or self.name}") from None


def load_catalogue(path: str | Path | None = None) -> ClassCatalogue:
    """Read a catalogue YAML (a path, or a bundled name such as ``hand_bones``); errors name the file and entry."""
    path = resolve_data_file(path or DEFAULT_CATALOGUE, what="class catalogue")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list under 'classes'")
    names, descriptions, groups, attached = [], [], [], []
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
        attached.append(entry.get("attached_to"))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate class names {duplicates}")
    return ClassCatalogue(name=str(doc.get("name", path.stem)), names=tuple(names), descriptions=tuple(descriptions),
                          groups=tuple(groups), hand_geometry=_hand_geometry(doc.get("derived"), names, path),
                          source=str(path), attached_to=_attachments(attached, names, path))


def _attachments(attached: list, names: list[str], path: Path) -> tuple[Optional[int], ...]:
    """``attached_to`` names as class indices; an unknown name, a class attached to itself or a cycle is an error."""
    out: list[Optional[int]] = []
    for name, target in zip(names, attached):
        if target is None:
            out.append(None)
            continue
        if str(target) not in names or str(target) == name:
            raise ValueError(f"{path}: {name}: attached_to {target!r} must name another class of the catalogue")
        out.append(names.index(str(target)))
    for start in range(len(names)):
        seen, k = {start}, out[start]
        while k is not None:
            if k in seen:
                raise ValueError(f"{path}: attached_to makes a cycle through {names[start]}")
            seen.add(k)
            k = out[k]
    return tuple(out)


def _hand_geometry(derived: object, names: list[str], path: Path) -> Optional[HandGeometryBones]:
    if derived is None:
        return None
    if not isinstance(derived, dict) or set(derived) - _DERIVED_KINDS:
        raise ValueError(f"{path}: 'derived' must be a mapping with keys among {sorted(_DERIVED_KINDS)}, got {derived!r}")
    spec = derived.get("hand_geometry")
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) != set(_HAND_GEOMETRY_KEYS):
        raise ValueError(f"{path}: derived.hand_geometry needs exactly the keys {list(_HAND_GEOMETRY_KEYS)}")
    missing = [f"{key}={spec[key]!r}" for key in _HAND_GEOMETRY_KEYS if spec[key] not in names]
    if missing:
        raise ValueError(f"{path}: derived.hand_geometry names classes that are not in the catalogue: {missing}")
    return HandGeometryBones(**{key: str(spec[key]) for key in _HAND_GEOMETRY_KEYS})
