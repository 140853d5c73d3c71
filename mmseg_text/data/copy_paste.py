"""Copy-paste of bones (Ghiasi et al., 2021), as the hand-bone winners used it: "the bones' shapes mattered more
than their positions". With probability ``p`` a training sample receives one bone from another training image:
the donor's pixels inside that bone's mask replace the sample's, and at those pixels every label of the donor is
kept (overlapping bones such as Trapezium/Trapezoid stay multi-label). The bone lands where it was in the donor
(both images are at the model size). A donor of the other hand side is mirrored first, so a left-hand bone never
lands unflipped in a right hand. Captions are untouched: they describe the receiving image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class CopyPaste:
    p: float  # probability that a training sample receives a bone
    classes: tuple[int, ...]  # channel indices of the bones that may be pasted

    @classmethod
    def from_config(cls, data_cfg, class_names: Sequence[str], groups: Sequence[str]) -> Optional["CopyPaste"]:
        if not data_cfg.copy_paste_p:
            return None
        wanted = set(data_cfg.copy_paste_classes)
        unknown = sorted(wanted - set(class_names))
        if unknown:
            raise ValueError(f"config key 'data.copy_paste_classes' names classes not in the catalogue: {unknown}")
        chosen = tuple(i for i, (n, g) in enumerate(zip(class_names, groups))
                       if n in wanted or g in set(data_cfg.copy_paste_groups))
        if not chosen:
            raise ValueError(f"data.copy_paste_p={data_cfg.copy_paste_p} but data.copy_paste_classes / "
                             f"data.copy_paste_groups={list(data_cfg.copy_paste_groups)} select no class of the catalogue")
        return cls(p=float(data_cfg.copy_paste_p), classes=chosen)


def paste_bone(image: np.ndarray, masks: np.ndarray, donor_image: np.ndarray, donor_masks: np.ndarray,
               rng: np.random.Generator, classes: Sequence[int], *, mirror_donor: bool = False
               ) -> tuple[np.ndarray, np.ndarray, Optional[int]]:
    """(image, masks, pasted class or None): one of ``classes`` present in the donor, copied with all its labels."""
    if mirror_donor:
        donor_image, donor_masks = donor_image[:, ::-1], donor_masks[:, :, ::-1]
    present = [c for c in classes if donor_masks[c].any()]
    if not present:
        return image, masks, None
    c = int(rng.choice(present))
    region = donor_masks[c].astype(bool)
    image, masks = image.copy(), masks.copy()
    image[region] = donor_image[region]
    masks[:, region] = donor_masks[:, region]
    return image, masks, c
