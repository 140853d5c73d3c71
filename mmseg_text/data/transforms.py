"""Albumentations pipelines built from the config list, and hand-side bookkeeping under flips.

``data.augment`` is data: ``[{name: HorizontalFlip, p: 0.5}, {name: Affine, rotate: [-15, 15]}, ...]``;
each ``name`` is looked up in albumentations (containers such as ``OneOf`` take a nested
``transforms`` list). Image and all mask channels go through the same geometric transform.

A mirror image of a right hand looks like a left hand, so the pipeline reports whether it applied an
odd number of reflections (HorizontalFlip, VerticalFlip, Transpose, the reflecting elements of D4 /
SquareSymmetry); the dataset then swaps ``side`` before building the caption. Rotations, scaling and
the wrist angle (anatomical, ulnar deviation positive) are unaffected.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping, Optional, Sequence

import albumentations as A
import numpy as np

_REFLECTIONS = {"HorizontalFlip", "VerticalFlip", "Transpose"}
_REFLECTING_GROUP_ELEMENTS = {"h", "v", "t", "hvt"}  # D4 / SquareSymmetry elements that mirror
_COMMON = ["HorizontalFlip", "Affine", "RandomBrightnessContrast", "RandomGamma", "GaussNoise", "CLAHE"]
_CONTAINERS = {"OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform", "RandomOrder"}


def _valid_names() -> list[str]:
    return sorted(n for n, obj in vars(A).items()
                  if inspect.isclass(obj) and issubclass(obj, A.BasicTransform) and not n.startswith("_"))


def _to_tuples(value: Any) -> Any:
    """YAML gives lists; albumentations' range arguments want tuples."""
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return tuple(value)
    return value


def build_transform(spec: Mapping[str, Any], where: str = "data.augment") -> A.BasicTransform:
    """One albumentations transform from ``{name: ..., **kwargs}``; errors name the entry."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"{where}: each augmentation needs a 'name', got {spec!r}")
    name = str(spec["name"])
    cls = getattr(A, name, None)
    is_transform = inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose))
    if not is_transform:
        valid = _valid_names()
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" did you mean {close}?" if close else ""
        raise ValueError(f"{where}: unknown albumentations transform {name!r};{hint} valid names include "
                         f"{_COMMON} (and {len(valid)} others in albumentations {A.__version__})")
    kwargs = {k: _to_tuples(v) for k, v in spec.items() if k != "name"}
    if "transforms" in kwargs:
        if name not in _CONTAINERS and not issubclass(cls, A.BaseCompose):
            raise ValueError(f"{where}: {name} does not take nested 'transforms'")
        kwargs["transforms"] = [build_transform(s, f"{where}.{name}") for s in kwargs["transforms"]]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{where}: bad arguments for {name} {kwargs}: {first}") from None


class Augmenter:
    """Callable ``(image, masks) -> (image, masks, mirrored)`` over an albumentations Compose.

    ``image``: uint8 (H, W); ``masks``: (K, H, W) array or None. ``mirrored`` is True when the
    applied transforms reflect the image an odd number of times (left <-> right hand).
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], seed: Optional[int] = None):
        self.transforms = list(transforms)
        self.compose = A.Compose(self.transforms, save_applied_params=True, seed=seed) if self.transforms else None

    def __len__(self) -> int:
        return len(self.transforms)

    def __call__(self, image: np.ndarray, masks: Optional[np.ndarray] = None, *, seed: Optional[int] = None
                 ) -> tuple[np.ndarray, Optional[np.ndarray], bool]:
        """``seed`` re-seeds the pipeline for this one call (reproducible per-sample augmentation)."""
        if self.compose is None:
            return image, masks, False
        if seed is not None:
            self.compose.set_random_seed(seed)
        if masks is None:
            out = self.compose(image=image)
        else:
            out = self.compose(image=image, masks=np.ascontiguousarray(masks, dtype=np.uint8))
        return out["image"], (None if masks is None else np.asarray(out["masks"])), \
            is_mirrored(out["applied_transforms"])

    def __repr__(self) -> str:
        return f"Augmenter({[type(t).__name__ for t in self.transforms]})"


def is_mirrored(applied: Sequence[tuple[str, Mapping[str, Any]]]) -> bool:
    """Whether a list of (name, params) applied transforms contains an odd number of reflections."""
    count = 0
    for name, params in applied:
        if name in _REFLECTIONS:
            count += 1
        elif str(params.get("group_element", "e")) in _REFLECTING_GROUP_ELEMENTS:
            count += 1
    return count % 2 == 1


def build_transforms(specs: Sequence[Mapping[str, Any]], *, seed: Optional[int] = None) -> Augmenter:
    return Augmenter([build_transform(s, f"data.augment[{i}]") for i, s in enumerate(specs or [])], seed=seed)


def build_train_transforms(cfg: Any, *, seed: Optional[int] = None) -> Augmenter:
    """Training augmentation from ``cfg.augment`` (a DataConfig, or a Config's ``data``)."""
    data_cfg = getattr(cfg, "data", cfg)
    return build_transforms(data_cfg.augment, seed=seed)
