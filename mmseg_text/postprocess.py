"""Connected-component clean-up of thresholded masks, chosen per class (nnU-Net's ``find_best_configuration`` step).

A bone is one blob. A stray island of a class (a fingertip's label on the neighbouring finger) costs Dice, and
keeping only the largest 8-connected component removes it. Whether it pays is a property of the model and the
class, so the rule is chosen per class on held-out predictions (validation, or the out-of-fold predictions of a
k-fold run) and kept only where it raises Dice there (``thresholds.best_thresholds_and_rules``); the choice is
stored beside the thresholds in ``thresholds.json`` and applied at prediction (``PostProcessed``).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from mmseg_text.choices import POSTPROCESS_RULES

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool (H, W) mask (ties: the first in raster order); an empty
    mask stays empty."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def apply_rule(mask: np.ndarray, rule: str) -> np.ndarray:
    if rule == "none":
        return mask
    if rule == "largest":
        return keep_largest_component(mask)
    raise ValueError(f"unknown post-processing rule {rule!r}; expected one of {POSTPROCESS_RULES}")


def check_rules(rules: Sequence[str], num_classes: int, source: str) -> list[str]:
    rules = list(rules)
    if len(rules) != num_classes:
        raise ValueError(f"{source}: {len(rules)} post-processing rules for {num_classes} classes")
    bad = sorted({r for r in rules if r not in POSTPROCESS_RULES})
    if bad:
        raise ValueError(f"{source}: unknown post-processing rule(s) {bad}; expected one of {POSTPROCESS_RULES}")
    return rules


class PostProcessed:
    """Masks (K, H, W) (a bool array or ``tiling.PackedMasks``) with each class's rule applied when the class is
    read: one class mask at a time, so packed masks stay packed."""

    def __init__(self, masks, rules: Sequence[str]):
        self.masks = masks
        self.rules = check_rules(rules, len(masks), "post-processing")
        self.shape = tuple(masks.shape)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, k: int) -> np.ndarray:
        return apply_rule(np.asarray(self.masks[k]), self.rules[k])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.stack(list(self)) if len(self) else np.zeros(self.shape, dtype=bool)
        return out if dtype is None else out.astype(dtype)


def postprocessed(masks, rules: Sequence[str] | None):
    """``masks`` as they are when no rule does anything, else ``PostProcessed``."""
    if rules is None or all(r == "none" for r in rules):
        return masks
    return PostProcessed(masks, rules)
