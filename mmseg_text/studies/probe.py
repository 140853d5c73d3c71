"""Counterfactual probe of a trained model: does it read its captions?

Each caption fact is changed alone (hand side, age, sex, weight, height, wrist angle; the order of the class names
for models that read them) and the probability maps are compared with the unchanged caption's: per class, the mean
absolute change of the probabilities and the Dice between the thresholded masks. A model that ignores its text
shows ~0 change and Dice 1.0. The open gate values (tanh g of every text gate) are reported with it.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from mmseg_text.data.facts import flip_side
from mmseg_text.inference.predictor import Predictor
from mmseg_text.metrics import dice_per_image
from mmseg_text.models import iter_gates

SEX_SWAP = {"female": "male", "male": "female"}


def _shift(key: str, delta: float, default: float) -> Callable[[dict], dict]:
    return lambda meta: {**meta, key: (meta.get(key) if meta.get(key) is not None else default) + delta}


# fact -> how it changes (side is handled apart: it is not part of the metadata dict)
META_CHANGES: dict[str, Callable[[dict], dict]] = {
    "age +20 years": _shift("age", 20.0, 30.0),
    "sex swapped": lambda meta: {**meta, "sex": SEX_SWAP.get(meta.get("sex"), "female")},
    "weight +20 kg": _shift("weight", 20.0, 65.0),
    "height +20 cm": _shift("height", 20.0, 168.0),
    "wrist bent +40 degrees": lambda meta: {**_shift("wrist_angle_deg", 40.0, 0.0)(meta), "bent_wrist": True},
}


def gate_values(model: torch.nn.Module) -> list[float]:
    """tanh(g) of every text gate, in module order (0 everywhere: the text path is closed)."""
    return [float(torch.tanh(g.detach())) for g in iter_gates(model)]


@torch.no_grad()
def probe(predictor: Predictor, pixels: torch.Tensor, sides: Sequence[str], metas: Sequence[dict]) -> dict[str, Any]:
    """Per change: mean |Δp| over pixels and images, and mean Dice of the thresholded masks, per class and overall."""
    names = predictor.catalogue.names
    base = predictor.probabilities(pixels, sides, metas)
    cut = torch.as_tensor(predictor.thresholds, dtype=base.dtype).view(1, -1, 1, 1)

    def compare(probs: torch.Tensor) -> dict[str, Any]:
        delta = (probs - base).abs().mean(dim=(0, 2, 3))
        dice = dice_per_image(probs > cut, base > cut).float().mean(0)
        return {"mean_abs_change": float(delta.mean()), "dice_vs_unchanged": float(dice.mean()),
                "per_class_abs_change": dict(zip(names, map(float, delta))),
                "per_class_dice": dict(zip(names, map(float, dice)))}

    # an unknown side is changed to "left", so the probe always changes the caption
    changes: dict[str, Any] = {"side flipped": compare(predictor.probabilities(
        pixels, [flip_side(s) if s != "unknown" else "left" for s in sides], metas))}
    for label, change in META_CHANGES.items():
        changes[label] = compare(predictor.probabilities(pixels, sides, [change(m) for m in metas]))
    reordered = _class_names_rolled(predictor)
    if reordered is not None:
        with reordered:
            changes["class names rolled by one"] = compare(predictor.probabilities(pixels, sides, metas))
    return {"changes": changes, "gates": {str(m.exported.directory): gate_values(m.exported.model)
                                          for m in predictor.members}}


class _Rolled:
    """Temporarily gives every class the name embedding of the next class (models that read class names)."""

    def __init__(self, sides):
        self.sides = sides

    def __enter__(self):
        for side in self.sides:
            side.class_embeddings = torch.roll(side.class_embeddings, 1, dims=0)

    def __exit__(self, *exc):
        for side in self.sides:
            side.class_embeddings = torch.roll(side.class_embeddings, -1, dims=0)


def _class_names_rolled(predictor: Predictor) -> Optional[_Rolled]:
    sides = [m.text for m in predictor.members if m.text is not None and m.text.class_embeddings is not None]
    return _Rolled(sides) if sides else None


__all__ = ["META_CHANGES", "gate_values", "probe"]
