"""Connected-component clean-up of thresholded masks, chosen per class (nnU-Net's ``find_best_configuration`` step).

A bone is one blob, and each class has a rule that cleans its thresholded mask:
  largest       keep the largest 8-connected component (a stray island of the class goes)
  min_area:F    drop the components below F x H x W pixels (specks go, a bone the model split in two stays)
  attached      keep the components that touch the bone the class articulates with (the catalogue's
                ``attached_to``): a fingertip label the model paints on all three look-alike tips keeps the one on
                its own finger
  exclusive     drop the pixels another class claims (its probability above 0.5), then keep the largest component:
                a label the model spreads over its neighbour too (the scaphoid's over the lunate, a tip's over the
                next finger's tip) gives the neighbour back, where the neighbour's own label is right. The bones a
                class articulates with (``attached_to`` both ways) do not count: a joint overlaps in projection
Whether a rule pays is a property of the model and the class, so it is chosen per class on held-out predictions
(validation, or the out-of-fold predictions of a k-fold run) and kept only where it raises Dice there
(``thresholds.best_thresholds_and_rules``); the choice is stored beside the thresholds in ``thresholds.json`` and
applied at prediction (``PostProcessed``). One labelling of a mask serves every rule (``component_rule_counts``).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
from scipy import ndimage

from mmseg_text.choices import POSTPROCESS_RULES

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_MIN_AREA = "min_area:"
# "exclusive": a class claims a pixel where its probability is above this, in tuning and at prediction alike (not
# at its tuned threshold, which may be as low as 0.1 and would claim a neighbour's edge)
CLAIM_THRESHOLD = 0.5
# "touching" for the attached rule: within this fraction of the image's longer side (5 px at 512, 20 at 2048). The
# seed-0 demo model's test Dice with the rule on every attached class: 0.878 / 0.903 / 0.905 / 0.900 at 1 / 3 / 6 /
# 12 px of 512 (0.855 without).
ATTACH_RADIUS = 0.01


def min_area_fraction(rule: str) -> float | None:
    """F of a ``min_area:F`` rule (0 < F < 1), None for another rule; a malformed one is a ValueError."""
    if not rule.startswith(_MIN_AREA):
        return None
    try:
        fraction = float(rule[len(_MIN_AREA):])
    except ValueError:
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"post-processing rule {rule!r}: min_area takes a fraction of the image area in (0, 1), "
                         "e.g. min_area:0.0005")
    return fraction


def is_rule(rule: object) -> bool:
    if not isinstance(rule, str):
        return False
    if rule in ("none", "largest", "attached", "exclusive"):
        return True
    try:
        return min_area_fraction(rule) is not None
    except ValueError:
        return False


class Claims:
    """Which classes claim each pixel for "exclusive" (probability above ``CLAIM_THRESHOLD``): how many, as one
    (H, W) count, and each class's claim as packed bits (an eighth of a byte per pixel and class)."""

    def __init__(self, count: np.ndarray, bits: np.ndarray, width: int):
        self.count, self.bits, self.width = count, bits, width

    @classmethod
    def empty(cls, classes: int, height: int, width: int) -> "Claims":
        return cls(np.zeros((height, width), np.uint16), np.zeros((classes, height, -(-width // 8)), np.uint8), width)

    @classmethod
    def of(cls, confident: np.ndarray) -> "Claims":
        """From bool (K, H, W): each class's pixels above the claim threshold."""
        confident = np.asarray(confident, dtype=bool)
        return cls(confident.sum(0, dtype=np.uint16), np.packbits(confident, axis=-1), confident.shape[-1])

    def set_rows(self, start: int, confident: np.ndarray) -> None:
        """Rows ``start:`` from bool (K, rows, W), a band at a time (prediction by rows)."""
        stop = start + confident.shape[1]
        self.count[start:stop] = confident.sum(0, dtype=np.uint16)
        self.bits[:, start:stop] = np.packbits(confident, axis=-1)

    def of_class(self, k: int) -> np.ndarray:
        return np.unpackbits(self.bits[k], axis=-1, count=self.width).view(bool)

    def by_others(self, k: int, allowed: Sequence[int] = ()) -> np.ndarray:
        """bool (H, W): the pixels a class other than ``k`` and the ``allowed`` ones claims."""
        own = sum((self.of_class(j).astype(np.uint16) for j in {k, *allowed}), np.zeros_like(self.count))
        return self.count > own


def joint_neighbours(attached_to: Optional[Sequence[Optional[int]]], num_classes: int) -> list[tuple[int, ...]]:
    """Per class, the bones it articulates with: its ``attached_to`` and the classes attached to it. Their masks
    may overlap its own (a joint in projection), so "exclusive" lets them."""
    attached = list(attached_to) if attached_to is not None else [None] * num_classes
    return [tuple(sorted({j for j in [attached[k]] if j is not None} | {j for j, a in enumerate(attached) if a == k}))
            for k in range(num_classes)]


def _labelled(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected labels of ``mask`` and the pixel count of each label (index 0, the background, counts 0)."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels, sizes


def near(mask: np.ndarray) -> np.ndarray:
    """The pixels within ``ATTACH_RADIUS`` of the image's longer side of ``mask`` (a square neighbourhood),
    computed inside the mask's bounding box grown by the radius (a bone is a small part of the image)."""
    radius = max(1, int(np.ceil(ATTACH_RADIUS * max(mask.shape))))
    out = np.zeros(mask.shape, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return out
    top, bottom = max(0, rows[0] - radius), min(mask.shape[0], rows[-1] + radius + 1)
    left, right = max(0, cols[0] - radius), min(mask.shape[1], cols[-1] + radius + 1)
    box = mask[top:bottom, left:right].astype(np.uint8)
    out[top:bottom, left:right] = ndimage.maximum_filter(box, size=2 * radius + 1, mode="constant", cval=0) > 0
    return out


def kept_labels(sizes: np.ndarray, rule: str, area: int, touching: Optional[np.ndarray] = None) -> np.ndarray:
    """Bool per label (``sizes`` from ``_labelled``): which components ``rule`` keeps in an image of ``area`` px;
    ``touching`` (bool per label, for "attached"): the components near the attached bone."""
    keep = sizes > 0
    if rule == "none" or keep.sum() <= 1:
        return keep
    if rule == "attached":  # no attached bone, or no component near it: nothing to go by, keep all
        return keep & touching if touching is not None and (keep & touching).any() else keep
    if rule == "largest":  # ties: the first in raster order
        only = np.zeros_like(keep)
        only[int(np.argmax(sizes))] = True
        return only
    fraction = min_area_fraction(rule)
    if fraction is None:
        raise ValueError(f"unknown post-processing rule {rule!r}; expected one of {POSTPROCESS_RULES}")
    return keep & (sizes >= fraction * area)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool (H, W) mask (ties: the first in raster order); an empty
    mask stays empty."""
    return apply_rule(mask, "largest")


def _touching(labels: np.ndarray, count: int, attached_near: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if attached_near is None:
        return None
    touching = np.zeros(count, dtype=bool)
    touching[np.unique(labels[attached_near])] = True
    touching[0] = False
    return touching


def apply_rule(mask: np.ndarray, rule: str, attached_near: Optional[np.ndarray] = None,
               claimed: Optional[np.ndarray] = None) -> np.ndarray:
    """``mask`` after ``rule``; ``attached_near``: ``near(mask of the attached bone)``, for "attached"; ``claimed``:
    the pixels other classes claim, for "exclusive" (None: nothing claimed)."""
    if rule == "none":
        return mask
    if rule == "exclusive":
        return apply_rule(mask & ~claimed if claimed is not None else mask, "largest")
    if not is_rule(rule):
        min_area_fraction(rule)  # a malformed min_area says what it takes
        raise ValueError(f"unknown post-processing rule {rule!r}; expected one of {POSTPROCESS_RULES}")
    labels, sizes = _labelled(mask)
    if (sizes > 0).sum() <= 1:
        return mask
    return kept_labels(sizes, rule, mask.size, _touching(labels, len(sizes), attached_near))[labels]


def component_rule_counts(mask: np.ndarray, target: np.ndarray, rules: Sequence[str],
                          attached_near: Optional[np.ndarray] = None,
                          claimed: Optional[np.ndarray] = None) -> list[tuple[int, int]]:
    """Per rule, (intersection with ``target``, kept pixels) of ``mask`` after the rule: one labelling for all (and
    one more for "exclusive" where another class claims some of ``mask``)."""
    labels, sizes = _labelled(mask)
    hits = np.bincount(labels[target], minlength=len(sizes))
    hits[0] = 0
    touching = _touching(labels, len(sizes), attached_near)
    out = []
    for rule in rules:
        if rule == "exclusive" and claimed is not None and (mask & claimed).any():
            kept = apply_rule(mask, rule, claimed=claimed)
            out.append((int((kept & target).sum()), int(kept.sum())))
            continue
        keep = kept_labels(sizes, "largest" if rule == "exclusive" else rule, mask.size, touching)
        out.append((int(hits[keep].sum()), int(sizes[keep].sum())))
    return out


def check_rules(rules: Sequence[str], num_classes: int, source: str) -> list[str]:
    rules = list(rules)
    if len(rules) != num_classes:
        raise ValueError(f"{source}: {len(rules)} post-processing rules for {num_classes} classes")
    bad = sorted({str(r) for r in rules if not is_rule(r)})
    if bad:
        raise ValueError(f"{source}: unknown post-processing rule(s) {bad}; expected 'none', 'largest', 'attached', "
                         "'exclusive' or 'min_area:F' (F a fraction of the image area)")
    return rules


class PostProcessed:
    """Masks (K, H, W) (a bool array or ``tiling.PackedMasks``) with each class's rule applied when the class is
    read: one class mask at a time, so packed masks stay packed. "attached" reads the attached bone's mask after
    that bone's own rule (``attached_to``: the catalogue's indices); those masks are kept while in use. "exclusive"
    reads ``claims`` (the classes above ``CLAIM_THRESHOLD``, as the tuning counted them); without it, the other
    classes' masks at their thresholds, before their rules; the bones of ``joint_neighbours`` are not counted."""

    def __init__(self, masks, rules: Sequence[str], attached_to: Optional[Sequence[Optional[int]]] = None,
                 claims: Optional[Claims] = None):
        self.masks = masks
        self._claims = claims
        self.rules = check_rules(rules, len(masks), "post-processing")
        self.shape = tuple(masks.shape)
        self.attached_to = list(attached_to) if attached_to is not None else [None] * len(self.rules)
        if len(self.attached_to) != len(self.rules):
            raise ValueError(f"post-processing: attached_to has {len(self.attached_to)} entries for "
                             f"{len(self.rules)} classes")
        self._parents: dict[int, np.ndarray] = {}
        self.neighbours = joint_neighbours(self.attached_to, len(self.rules))

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, k: int) -> np.ndarray:
        if self.rules[k] == "exclusive":
            claimed = self.claims().by_others(k, self.neighbours[k])
            return apply_rule(np.asarray(self.masks[k]), "exclusive", claimed=claimed)
        parent = self.attached_to[k] if self.rules[k] == "attached" else None
        if parent is None:
            return apply_rule(np.asarray(self.masks[k]), self.rules[k])
        if parent not in self._parents:
            self._parents[parent] = self[parent]
        return apply_rule(np.asarray(self.masks[k]), "attached", near(self._parents[parent]))

    def claims(self) -> Claims:
        if self._claims is None:
            self._claims = Claims.of(np.asarray(self.masks))
        return self._claims

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.stack(list(self)) if len(self) else np.zeros(self.shape, dtype=bool)
        return out if dtype is None else out.astype(dtype)


def postprocessed(masks, rules: Sequence[str] | None, attached_to: Optional[Sequence[Optional[int]]] = None,
                  claims: Optional[Claims] = None):
    """``masks`` as they are when no rule does anything, else ``PostProcessed``."""
    if rules is None or all(r == "none" for r in rules):
        return masks
    return PostProcessed(masks, rules, attached_to, claims)
