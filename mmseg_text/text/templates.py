"""Caption templates: the wording of every caption, as data (``mmseg_text/assets/caption_templates.yaml``).

``load_templates`` reads and validates the file: every key must be present, and a template may use only
the placeholders listed for it, so a typo is an error naming the file and the key rather than a caption
that silently says "{aeg}".
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmseg_text.assets import resolve_data_file
from mmseg_text.data.facts import SIDES

DEFAULT_TEMPLATES = "caption_templates"

# Template key -> placeholders it may use. Anything else in the YAML is a typo and an error.
_PLACEHOLDERS: dict[str, set[str]] = {
    "classes": {"name", "description"},
    "meta": {"side", "subject", "weight", "height", "wrist"},
    "subject.age_sex": {"age", "noun"},
    "subject.age_only": {"age"},
    "subject.sex_only": {"noun"},
    "subject.unknown": set(),
    "subject.decade_sex": {"decade", "noun", "pronoun"},
    "subject.decade_only": {"decade"},
    "weight": {"value"},
    "weight_unknown": set(),
    "height": {"value"},
    "height_unknown": set(),
    "wrist_bent": {"angle", "direction"},
    "wrist_straight": set(),
    "wrist_unknown": set(),
    "wrist_bent_unknown_angle": set(),
}
# Optional keys (only data.prompted_groups reads them; older template files lack them) -> placeholders.
_OPTIONAL_PLACEHOLDERS: dict[str, set[str]] = {"prompt": {"groups"}, "prompt_and": set()}
_OTHER_KEYS = ("side", "sex", "decades", "directions", "wrist_straight_below_deg", "bucket")


class CaptionTemplateError(ValueError):
    """The caption template file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class CaptionTemplates:
    """The parsed template file (see ``mmseg_text/assets/caption_templates.yaml`` for the meaning of each key)."""

    text: dict[str, str]  # dotted template key -> format string (optional keys only when the file has them)
    side: dict[str, str]  # left | right | unknown -> phrase
    sex: dict[str, dict[str, str]]  # female | male -> {noun, pronoun}
    decades: dict[int, str]  # first year of a decade -> word
    directions: dict[str, str]  # positive | negative -> bone name
    wrist_straight_below_deg: float
    bucket: dict[str, float]  # weight | height | wrist_angle -> rounding step
    source: str = ""

    def request(self, groups: "list[str] | tuple[str, ...]") -> str:
        """The positive control's request for ``groups`` (keys ``prompt`` and ``prompt_and``)."""
        missing = [k for k in _OPTIONAL_PLACEHOLDERS if k not in self.text]
        if missing:
            raise CaptionTemplateError(f"{self.source}: data.prompted_groups needs the key(s) {missing} "
                                       "(see the bundled caption_templates.yaml)")
        names = list(groups)
        listing = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {self.text['prompt_and']} {names[-1]}"
        return self.text["prompt"].format(groups=listing)


def load_templates(path: str | Path | None = None) -> CaptionTemplates:
    """Read and validate a caption template YAML; errors name the file and the key."""
    try:
        path = resolve_data_file(path or DEFAULT_TEMPLATES, what="caption template file")
    except FileNotFoundError as err:
        raise CaptionTemplateError(str(err)) from None
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise CaptionTemplateError(f"{path}: expected a mapping at the top level")

    def get(dotted: str) -> Any:
        node: Any = doc
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise CaptionTemplateError(f"{path}: missing key '{dotted}'")
            node = node[part]
        return node

    text: dict[str, str] = {}
    optional = {k: v for k, v in _OPTIONAL_PLACEHOLDERS.items() if k in doc}
    for key, allowed in {**_PLACEHOLDERS, **optional}.items():
        value = get(key)
        if not isinstance(value, str):
            raise CaptionTemplateError(f"{path}: key '{key}' must be a string, got {type(value).__name__}")
        try:
            used = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
        except ValueError as err:
            raise CaptionTemplateError(f"{path}: key '{key}': {err}") from None
        unknown = sorted(used - allowed)
        if unknown:
            raise CaptionTemplateError(
                f"{path}: key '{key}' uses unknown placeholder(s) {unknown}; allowed: {sorted(allowed)}")
        text[key] = value
    for key in _OTHER_KEYS:
        get(key)
    side = {s: str(get(f"side.{s}")) for s in SIDES}
    sex = {s: {"noun": str(get(f"sex.{s}.noun")), "pronoun": str(get(f"sex.{s}.pronoun"))} for s in ("female", "male")}
    try:
        decades = {int(k): str(v) for k, v in get("decades").items()}
        bucket = {k: float(get(f"bucket.{k}")) for k in ("weight", "height", "wrist_angle")}
        straight = float(get("wrist_straight_below_deg"))
    except (TypeError, ValueError, AttributeError) as err:
        raise CaptionTemplateError(f"{path}: bad number in 'decades', 'bucket' or 'wrist_straight_below_deg': {err}") from None
    if any(step <= 0 for step in bucket.values()):
        raise CaptionTemplateError(f"{path}: 'bucket' steps must be > 0, got {bucket}")
    directions = {d: str(get(f"directions.{d}")) for d in ("positive", "negative")}
    return CaptionTemplates(text=text, side=side, sex=sex, decades=decades, directions=directions,
                            wrist_straight_below_deg=straight, bucket=bucket, source=str(path))
