"""Captions: class-catalogue entries and per-image metadata -> English sentences.

The wording lives in ``mmseg_text/assets/caption_templates.yaml`` (``text/templates.py``); this module only picks a template and
fills it. Two kinds of caption exist (``text.mode``):

* ``classes`` -- one caption per bone, from its name and anatomical description (K captions).
* ``meta``    -- one caption per image, from the patient metadata and the hand side, e.g.
  "X-ray of the right hand of a 34-year-old woman, 58 kg, 162 cm tall, wrist bent 12 degrees
  toward the ulna."

``caption_for_image`` is a plain function of its input (side + metadata dict), so the dataset calls
it *after* augmentation: a flip that turned a right hand into a left hand says "left". Missing
values (None, NaN, pandas NA, non-positive ages/weights/heights) are spoken as unknown.

Shuffled control (``text.shuffle``, the placebo of the ablation): every image is paired, once per
run, with a *donor* image of another person; its caption then carries the donor's patient metadata
(age, sex, weight, height, wrist angle) but the image's own side after augmentation. Only the
patient metadata is misleading; the side stays true, so the control measures what the metadata
adds and not what a wrong side would break. The engine applies it through :meth:`caption_fn`::

    fn = builder.caption_fn(meta_by_image={image_id: meta, ...}, groups={image_id: person_id, ...})
    dataset = SegmentationDataset(..., caption_fn=fn)   # fn(sample) -> caption, after augmentation

Build the pairing once per run over every image the run sees (train and validation together; the
test images at prediction time), so a model trained on shuffled captions is also evaluated on them.
Pass ``groups`` (person ids): both hands of a person share metadata, so a donor from the same person
would not be a placebo at all.
"""
from __future__ import annotations

import math
import numbers
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.data.facts import flip_side, normalise_side
from mmseg_text.data.metadata import normalise_sex
from mmseg_text.choices import TextMode, parse_text_mode
from mmseg_text.text.templates import load_templates

# --------------------------------------------------------------------------- value normalisation

def is_missing(value: Any) -> bool:
    """None, NaN (Python, NumPy), pandas NA / NaT all count as missing."""
    if value is None:
        return True
    if type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return not math.isfinite(float(value))
    if isinstance(value, str):
        return value.strip().lower() in ("", "nan", "none", "null", "na", "n/a")
    return False


def _number(value: Any, *, positive: bool) -> Optional[float]:
    """A finite float, or None when missing / not a number / (with ``positive``) not > 0."""
    if is_missing(value) or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x) or (positive and x <= 0):
        return None
    return x


def _round_to(x: float, step: float) -> int:
    """Round half up to a multiple of ``step`` (Python's round() is half-to-even: 62.5 -> 62)."""
    return int(math.floor(x / step + 0.5) * step)


def _sex(value: Any) -> Optional[str]:
    """'female' | 'male' by the metadata table's own rules (``data.metadata.normalise_sex``); an
    unrecognised value is unknown here (``check_data`` reports it in the table)."""
    try:
        return normalise_sex(value)
    except ValueError:
        return None


def _flag(value: Any) -> Optional[bool]:
    if is_missing(value):
        return None
    if isinstance(value, str):
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(value.strip().lower())
    try:
        return bool(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- the builder

class CaptionBuilder:
    """Turns the class catalogue and image metadata into captions, following a template file.

    Args:
        templates_path: caption template YAML (``text.templates``).
        catalogue: the class catalogue (names and descriptions of the bones).
        mode: ``none`` | ``classes`` | ``meta`` | ``meta+classes`` (``text.mode``); says which captions
            the run uses (:attr:`uses_class_captions`, :attr:`uses_meta_captions`). The caption
            functions themselves work in every mode, so reports can always show them.
        bucket_numbers: age as a decade, weight / height / wrist angle rounded to the template's steps.
        shuffle: the placebo control: :meth:`caption_fn` gives each image a donor's metadata.
        seed: seed of the shuffled pairing.
    """

    def __init__(self, templates_path: str | Path | None, catalogue: ClassCatalogue, *, mode: str | TextMode,
                 bucket_numbers: bool = False, shuffle: bool = False, seed: int = 0):
        self.mode = parse_text_mode(mode)
        if shuffle and not self.mode.uses_meta:
            raise ValueError("shuffle pairs images with other images' metadata captions: "
                             f"it needs mode='meta' or 'meta+classes', got {self.mode.name!r}")
        self.templates = load_templates(templates_path)
        self.catalogue = catalogue
        self.bucket_numbers = bool(bucket_numbers)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)

    @property
    def uses_class_captions(self) -> bool:
        return self.mode.uses_classes

    @property
    def uses_meta_captions(self) -> bool:
        return self.mode.uses_meta

    # ---- classes
    def class_captions(self) -> list[str]:
        """One caption per class, in catalogue order (K captions)."""
        template = self.templates.text["classes"]
        return [template.format(name=name, description=description)
                for name, description in zip(self.catalogue.names, self.catalogue.descriptions)]

    # ---- one image
    def caption_for_image(self, sample_or_meta: Mapping[str, Any]) -> str:
        """The metadata caption of one image: a pure function of ``side`` and the ``meta`` dict.

        Accepts a dataset sample (``{"side": ..., "meta": {...}, ...}``) or a flat dict holding the
        metadata keys and ``side`` together. Metadata keys: ``age``, ``sex``, ``weight``, ``height``,
        ``wrist_angle_deg`` (anatomical, positive = toward the ulna), ``bent_wrist``.
        """
        meta = sample_or_meta.get("meta")
        if not isinstance(meta, Mapping):
            meta = sample_or_meta
        t = self.templates
        return t.text["meta"].format(
            side=t.side[normalise_side(sample_or_meta.get("side"))],
            subject=self._subject(meta.get("age"), meta.get("sex")),
            weight=self._measure("weight", meta.get("weight")),
            height=self._measure("height", meta.get("height")),
            wrist=self._wrist(meta.get("wrist_angle_deg"), meta.get("bent_wrist")),
        )

    def _subject(self, age_value: Any, sex_value: Any) -> str:
        t = self.templates.text
        age = _number(age_value, positive=True)
        sex = _sex(sex_value)
        words = self.templates.sex.get(sex, {}) if sex else {}
        if age is None:
            return t["subject.sex_only"].format(**words) if sex else t["subject.unknown"]
        if self.bucket_numbers:
            decade = self._decade_word(age)
            if sex:
                return t["subject.decade_sex"].format(decade=decade, **words)
            return t["subject.decade_only"].format(decade=decade)
        years = _round_to(age, 1)
        if sex:
            return t["subject.age_sex"].format(age=years, noun=words["noun"])
        return t["subject.age_only"].format(age=years)

    def _decade_word(self, age: float) -> str:
        start = int(age // 10) * 10
        return self.templates.decades.get(start, f"{start}s")

    def _measure(self, field: str, value: Any) -> str:
        x = _number(value, positive=True)
        if x is None:
            return self.templates.text[f"{field}_unknown"]
        step = self.templates.bucket[field] if self.bucket_numbers else 1
        return self.templates.text[field].format(value=_round_to(x, step))

    def _wrist(self, angle_value: Any, bent_value: Any) -> str:
        t = self.templates
        angle = _number(angle_value, positive=False)
        if angle is None:
            bent = _flag(bent_value)
            if bent is True:
                return t.text["wrist_bent_unknown_angle"]
            if bent is False:
                return t.text["wrist_straight"]
            return t.text["wrist_unknown"]
        if abs(angle) < t.wrist_straight_below_deg:
            return t.text["wrist_straight"]
        step = t.bucket["wrist_angle"] if self.bucket_numbers else 1
        degrees = max(_round_to(abs(angle), step), int(math.ceil(step)))  # never "bent 0 degrees"
        direction = t.directions["positive" if angle > 0 else "negative"]
        return t.text["wrist_bent"].format(angle=degrees, direction=direction)

    # ---- shuffled control
    def shuffled_pairing(self, image_ids: Iterable[str],
                         groups: Optional[Mapping[str, Any] | Sequence[Any]] = None) -> dict[str, str]:
        """``{image_id: donor_image_id}``: a seeded permutation without fixed points (for n >= 2).

        Deterministic for a given set of ids and seed (the input order does not matter). Every
        image is a donor exactly once, so the shuffled captions have the same distribution as the
        real ones; only their link to the image is broken. With ``groups`` (person id per image, as
        a mapping or a sequence parallel to ``image_ids``), a donor is never from the same group as
        long as no group holds more than half of the images.

        How: groups in a seeded random order, images in a seeded random order within their group,
        laid out in one row; each image takes the image ``m`` places further along (cyclically),
        ``m`` = the largest group size. A group occupies at most ``m`` consecutive places, so the
        donor is always from another group.
        """
        ids = list(image_ids)
        if groups is not None and not isinstance(groups, Mapping):
            if len(groups) != len(ids):
                raise ValueError(f"groups has {len(groups)} entries for {len(ids)} image ids")
            groups = dict(zip(ids, groups))
        unique = sorted(set(ids))
        if len(unique) != len(ids):
            raise ValueError("shuffled_pairing: image ids must be unique")
        n = len(unique)
        if n < 2:
            return {i: i for i in unique}
        rng = random.Random(f"mmseg_text.shuffled_pairing:{self.seed}")
        members: dict[str, list[str]] = defaultdict(list)
        for image_id in unique:
            group = groups[image_id] if groups is not None else image_id
            members[str(group)].append(image_id)
        order = sorted(members)
        rng.shuffle(order)
        row: list[str] = []
        for group in order:
            block = members[group]
            rng.shuffle(block)
            row.extend(block)
        largest = max(len(block) for block in members.values())
        shift = largest if 2 * largest <= n else max(1, n // 2)  # one huge group: avoid at least self
        return {row[i]: row[(i + shift) % n] for i in range(n)}

    # ---- what the dataset receives
    def caption_fn(self, meta_by_image: Optional[Mapping[str, Mapping[str, Any]]] = None,
                   groups: Optional[Mapping[str, Any]] = None) -> Optional["CaptionFn"]:
        """The ``caption_fn(sample) -> str`` injected into the dataset; None when the mode has no meta captions.

        With ``shuffle``, ``meta_by_image`` (every image of the run -> its metadata dict) is
        required, and ``groups`` (image -> person id) keeps donors away from the same person.
        """
        if not self.uses_meta_captions:
            return None
        if not self.shuffle:
            return CaptionFn(self)
        if meta_by_image is None:
            raise ValueError("text.shuffle needs meta_by_image (image_id -> metadata) to find donor captions")
        pairing = self.shuffled_pairing(list(meta_by_image), groups)
        return CaptionFn(self, pairing=pairing, meta_by_image=dict(meta_by_image))


class CaptionFn:
    """Picklable ``sample -> caption`` callable (DataLoader workers get a copy).

    With a pairing, the caption uses the donor image's metadata and the sample's own side.
    """

    def __init__(self, builder: CaptionBuilder, pairing: Optional[Mapping[str, str]] = None,
                 meta_by_image: Optional[Mapping[str, Mapping[str, Any]]] = None):
        self.builder = builder
        self.pairing = dict(pairing) if pairing is not None else None
        self.meta_by_image = meta_by_image

    def _meta_for(self, sample: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.pairing is None:
            return sample.get("meta") or {}
        image_id = sample.get("image_id")
        if image_id not in self.pairing:
            raise KeyError(f"image {image_id!r} is not in the shuffled pairing of this run "
                           f"({len(self.pairing)} images); build caption_fn over every image the run uses")
        return self.meta_by_image[self.pairing[image_id]]  # type: ignore[index]

    def __call__(self, sample: Mapping[str, Any], *, drop: bool = False) -> str:
        """``drop``: caption dropout (``text.drop_p``): the caption of an image without metadata, every fact
        (side included) unknown, as ``mmseg-predict`` without ``--with-meta`` speaks it."""
        if drop:
            return self.builder.caption_for_image({"side": "unknown", "meta": {}})
        return self.builder.caption_for_image({"side": sample.get("side"), "meta": self._meta_for(sample)})

    def variants(self, sample: Mapping[str, Any], *, with_dropped: bool = False) -> list[str]:
        """Every caption this sample can get under augmentation (its side and the flipped side; with
        ``with_dropped`` also its caption without metadata): warm-up set."""
        side = normalise_side(sample.get("side"))
        meta = self._meta_for(sample)
        captions = [self.builder.caption_for_image({"side": s, "meta": meta}) for s in (side, flip_side(side))]
        if with_dropped:
            captions.append(self(sample, drop=True))
        return list(dict.fromkeys(captions))


__all__ = ["CaptionBuilder", "CaptionFn", "is_missing", "normalise_side"]
