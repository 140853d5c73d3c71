"""Positive control for the text path: prompted group subsets (``data.prompted_groups``).

"Text did not help" means little unless the text path *can* carry information. In this task the caption holds
information the image does not: each sample asks, in its caption, for a random non-empty set of the catalogue's
groups (worded by the caption templates' ``prompt``, e.g. "Segment only the carpal and forearm bones."), and only
the bones of those groups are targets.
A model that reads its caption can learn to leave the other bones empty; a model without text (or with a
caption that asks for an independently drawn set: the shuffled control) cannot know what was asked.

The draw is seeded per (seed, epoch, sample index), so text-on, text-off and shuffled variants of one seed see
the same targets; validation uses the fixed ``data.split_seed`` and epoch 0, the same prompts for every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Sequence

import numpy as np


def with_prompt(caption: str, sentence: str) -> str:
    """The caption a prompted sample is given: its own caption, then the request. Training encodes every such
    caption up front (``data_setup``), so the dataset and the cache warm-up must join them the same way."""
    return f"{caption} {sentence}"


@dataclass(frozen=True)
class GroupPrompt:
    class_groups: tuple[str, ...]  # the catalogue group of each class, in class order
    seed: int
    request: Callable[[Sequence[str]], str]  # groups -> the sentence (CaptionTemplates.request)
    shuffled: bool = False  # the caption asks for an independent draw (placebo), not for the targets

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.class_groups))

    def subsets(self) -> list[tuple[str, ...]]:
        """Every non-empty set of groups, in catalogue order (what a caption may ask for)."""
        groups = self.groups
        return [c for r in range(1, len(groups) + 1) for c in combinations(groups, r)]

    def draw(self, epoch: int, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(groups that are targets, groups the caption asks for) of sample ``index`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index, 3])
        options = self.subsets()
        target = options[int(rng.integers(len(options)))]
        asked = options[int(rng.integers(len(options)))] if self.shuffled else target
        return target, asked

    def keep(self, masks: np.ndarray, target: Sequence[str]) -> np.ndarray:
        """The masks with every class outside the ``target`` groups emptied."""
        wanted = np.array([g in target for g in self.class_groups])
        out = np.array(masks, copy=True)
        out[~wanted] = False
        return out

    def sentence(self, asked: Sequence[str]) -> str:
        return self.request(tuple(asked))

    def sentences(self) -> list[str]:
        return [self.sentence(s) for s in self.subsets()]
