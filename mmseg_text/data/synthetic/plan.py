"""Who is in the dataset and what each image shows, decided before anything is drawn.

The plan is cheap and fully determined by ``(ids, seed)``: people and their metadata, the train/test
split by person, both hands per person with unique 13-digit time-stamp file names, and the wrist angle
of every image. Keeping it apart from drawing lets tests check the distributions (bent-wrist shares,
sex ratio) on hundreds of IDs, and makes each image a pure function of its :class:`ImageSpec`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

TEST_ID_SHARE = 0.27                       # share of person IDs in the test split (real: 144 of 544)
BENT_SHARE = {"train": 0.11, "test": 0.55}  # bent-wrist images per split: the real distribution shift
BENT_RANGE_DEG = (40.0, 60.0)
STRAIGHT_LIMIT_DEG = 20.0
SUFFIX_SHARE = 0.08                        # file names carrying an _R/_L suffix
_FIRST_TIMESTAMP_MS = 1_661_130_000_000   # 2022-08-22, as in the real file names
_TIMESTAMP_SLOT_MS = 1_200_000            # one person per 20 minutes keeps time stamps unique


@dataclass(frozen=True)
class Person:
    """One row of meta_data.xlsx."""

    person_id: int
    age: int
    sex: str      # "female" | "male"
    weight: int   # kg
    height: int   # cm


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides one image; rendering it is a pure function of this and the size."""

    person: Person
    split: str               # "train" | "test"
    side: str                # "left" | "right"
    wrist_angle_deg: float   # anatomical: + = ulnar deviation, unchanged by a mirror
    bent_wrist: bool
    timestamp: int           # ms since the epoch: names the file
    suffix: str              # "" | "_R" | "_L"
    seed: tuple[int, ...]    # entropy of this image's renderer

    @property
    def image_id(self) -> str:
        return f"image{self.timestamp}{self.suffix}"


@dataclass(frozen=True)
class DatasetPlan:
    people: tuple[Person, ...]        # IDs 1..N, each with two images
    extra_people: tuple[Person, ...]  # metadata-only rows, as in the real spreadsheet
    test_ids: frozenset[int]
    images: tuple[ImageSpec, ...]


def plan_dataset(ids: int, seed: int = 0) -> DatasetPlan:
    """Who is in which split, their metadata and their two images, without drawing anything.

    Cheap, so tests can check the distributions (bent-wrist shares, sex ratio) on hundreds of IDs.
    """
    if ids < 1:
        raise ValueError(f"ids must be >= 1, got {ids}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    people = tuple(_sample_person(pid, seed) for pid in range(1, ids + 1))
    extra = tuple(_sample_person(pid, seed) for pid in range(ids + 1, ids + 1 + max(2, ids // 60)))
    test_ids = _choose_test_ids(ids, seed)
    drafts = []
    for person in people:
        split = "test" if person.person_id in test_ids else "train"
        drafts.extend(_person_images(person, split, seed))
    return DatasetPlan(people, extra, test_ids, _assign_wrist_angles(drafts, seed))


def _sample_person(person_id: int, seed: int) -> Person:
    """Age 19-69 (mean ~32), ~52 % female, height 150-187 cm, weight 42-118 kg (REFERENCE.md)."""
    rng = np.random.default_rng([seed, person_id, 1])
    male = rng.random() >= 0.52
    age = int(np.clip(round(19 + rng.gamma(1.6, 8.2)), 19, 69))
    height = int(np.clip(round(rng.normal(174, 6) if male else rng.normal(161, 5.5)), 150, 187))
    bmi = np.clip(rng.normal(24.0, 3.3) if male else rng.normal(22.0, 3.2), 16.5, 36.0)
    weight = int(np.clip(round(bmi * (height / 100) ** 2), 42, 118))
    return Person(person_id, age, "male" if male else "female", weight, height)


def _choose_test_ids(ids: int, seed: int) -> frozenset[int]:
    """About 27 % of IDs, spread among the train IDs; at least one when there are three or more."""
    if ids < 3:
        return frozenset()
    n_test = min(max(1, round(TEST_ID_SHARE * ids)), ids - 1)
    rng = np.random.default_rng([seed, 0, 1])
    return frozenset(int(i) for i in rng.choice(np.arange(1, ids + 1), size=n_test, replace=False))


def _person_images(person: Person, split: str, seed: int) -> list[ImageSpec]:
    """Both hands of one person, taken a few minutes apart (unique 13-digit time stamps)."""
    rng = np.random.default_rng([seed, person.person_id, 2])
    sides = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    first = _FIRST_TIMESTAMP_MS + person.person_id * _TIMESTAMP_SLOT_MS + int(rng.integers(0, 600_000))
    stamps = (first, first + int(rng.integers(15_000, 300_000)))
    specs = []
    for hand, (side, stamp) in enumerate(zip(sides, stamps)):
        suffix = ("_R" if side == "right" else "_L") if rng.random() < SUFFIX_SHARE else ""
        specs.append(ImageSpec(person, split, side, 0.0, False, stamp, suffix,
                               (seed, person.person_id, 3, hand)))
    return specs


def _assign_wrist_angles(drafts: list[ImageSpec], seed: int) -> tuple[ImageSpec, ...]:
    """Exactly round(share * n) bent wrists per split, so even a tiny set has the real shift."""
    rng = np.random.default_rng([seed, 0, 2])
    bent = set()
    for split, share in BENT_SHARE.items():
        members = [i for i, d in enumerate(drafts) if d.split == split]
        n_bent = min(len(members), round(share * len(members)))
        if n_bent:
            bent.update(int(i) for i in rng.choice(members, size=n_bent, replace=False))
    specs = []
    for i, draft in enumerate(drafts):
        if i in bent:
            sign = 1.0 if rng.random() < 0.8 else -1.0  # radial deviation has the smaller range
            angle = sign * rng.uniform(*BENT_RANGE_DEG)
        else:
            angle = float(np.clip(rng.normal(3.0, 8.0), -STRAIGHT_LIMIT_DEG, STRAIGHT_LIMIT_DEG))
        specs.append(replace(draft, wrist_angle_deg=round(float(angle), 2), bent_wrist=i in bent))
    return tuple(specs)
