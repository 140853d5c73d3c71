"""Validation during training: per-image Dice rows gathered across ranks, optional threshold tuning.

Dice here is measured at the working resolution against masks rasterised at that resolution (cheap
enough to run every epoch). A model trained on crops is validated on whole images tiled into windows of its
crop size, through the same ``inference.tiling`` path as prediction. The competition number, at each image's
original resolution, comes from ``scripts/predict.py`` + ``scripts/evaluate.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from mmseg_text.calibration import CalibrationCounts, TemperatureCounts, calibration_counts, temperature_counts
from mmseg_text.catalogue import ClassCatalogue
from mmseg_text.inference.tiling import WindowOptions, model_probabilities
from mmseg_text.metrics import DiceAccumulator, dice_per_image
from mmseg_text.thresholds import TUNED_RULES, SweepCounts, best_thresholds_and_rules, threshold_sweep_counts

DEFAULT_THRESHOLD = 0.5


@dataclass
class EvalResult:
    dice: DiceAccumulator  # per-image rows at the default threshold
    facts: dict[str, np.ndarray]  # per fact subgroup (catalogue.fact_subgroups) and row: 1 yes, 0 no, -1 unknown
    catalogue: ClassCatalogue
    thresholds: list[float] = field(default_factory=list)  # tuned per class (or the default)
    postprocess: list[str] = field(default_factory=list)  # per class: a rule of postprocess.py ("none" ...), tuned
    tuned_mean_dice: Optional[float] = None  # with tuned thresholds, on the split they were tuned on
    sweep: Optional[SweepCounts] = None  # the Dice counts at every candidate threshold (out-of-fold tuning)
    calibration: Optional[CalibrationCounts] = None  # binned probabilities vs foreground: ECE, reliability
    temperature: Optional[TemperatureCounts] = None  # with fit_temperature: NLL and ECE per candidate temperature

    @property
    def mean_dice(self) -> float:
        return self.dice.mean()

    @property
    def grouped(self) -> dict[str, float]:
        return self.dice.grouped(self.catalogue.groups)

    def subgroups(self) -> dict[str, Optional[float]]:
        """Mean Dice of each fact subgroup (e.g. bent / straight wrists); None for one without images."""
        out: dict[str, Optional[float]] = {}
        for subgroup in self.catalogue.fact_subgroups:
            flags = self.facts[subgroup.fact]
            for label, value in subgroup.labels:
                selected = flags == int(value)
                out[label] = self.dice.subset(selected).mean() if selected.any() else None
        return out

    def subgroup_counts(self) -> dict[str, int]:
        return {label: int((self.facts[s.fact] == int(value)).sum())
                for s in self.catalogue.fact_subgroups for label, value in s.labels}

    def to_dict(self, catalogue: ClassCatalogue) -> dict[str, Any]:
        return {
            "mean_dice": self.mean_dice,
            "per_class": dict(zip(catalogue.names, map(float, self.dice.per_class()))),
            "grouped": self.grouped,
            "subgroups": self.subgroups(),
            "num_images": len(self.dice),
            "subgroup_images": self.subgroup_counts(),
            "thresholds": self.thresholds,
            "postprocess": self.postprocess,
            "tuned_mean_dice": self.tuned_mean_dice,
            **({"calibration": self.calibration.summary(catalogue.names)} if self.calibration is not None else {}),
            **({"temperature": self.temperature.summary(catalogue.names)} if self.temperature is not None else {}),
        }

    @property
    def temperatures(self) -> Optional[list[float]]:
        """Per class, the temperature fitted on this split (None without fit_temperature)."""
        return None if self.temperature is None else [float(t) for t in self.temperature.fitted()]


def _fact_flags(batch: dict, facts: Sequence[str], device: torch.device) -> torch.Tensor:
    """(B, F): each image's yes/no facts (1 / 0; -1 unknown), one column per fact subgroup."""
    def flag(value) -> int:
        return -1 if value is None else int(bool(value))

    return torch.tensor([[flag(meta.get(f)) for f in facts] for meta in batch["meta"]], dtype=torch.long,
                        device=device).reshape(len(batch["meta"]), len(facts))


def tuned_thresholds(counts: SweepCounts) -> tuple[list[float], list[str], float]:
    """Per-class thresholds and post-processing rules from sweep counts, and the mean Dice they give on those
    same images."""
    thresholds, rules, dice = best_thresholds_and_rules(counts)
    return [float(t) for t in thresholds], rules, float(np.mean(dice))


@torch.no_grad()
def validate(model, loader, accelerator: Accelerator, catalogue: ClassCatalogue, *, text=None,
             thresholds: float | Sequence[float] = DEFAULT_THRESHOLD, tune_thresholds: bool = False,
             tune_postprocess: bool = False, fit_temperature: bool = False, channels_last: bool = False,
             window: Optional[int] = None, window_options: WindowOptions = WindowOptions(),
             rules: Sequence[str] = TUNED_RULES) -> EvalResult:
    """Run the model over ``loader``; rows from all ranks are gathered (no duplicated samples).
    ``window``: the model's input size when images are larger (tiled as in prediction). ``tune_postprocess``
    (with ``tune_thresholds``): also choose per class a connected-component rule (the largest component, small
    objects dropped, the components touching the catalogue's attached bone, the pixels no other class claims, or
    none: postprocess.py; ``rules``: those tried). ``fit_temperature``: also the NLL and ECE of every candidate temperature
    (calibration.py), from which one temperature per class is fitted."""
    model.eval()
    dice = DiceAccumulator(catalogue.names)
    facts = [s.fact for s in catalogue.fact_subgroups]
    flag_rows: list[np.ndarray] = []
    sweeps: list[SweepCounts] = []
    calibrations: list[CalibrationCounts] = []
    temperatures: list[TemperatureCounts] = []
    for batch in tqdm(loader, desc="val", leave=False, disable=not accelerator.is_local_main_process):
        context = text.batch_context(batch, accelerator.device) if text is not None else None
        images = batch["image"]
        probs = model_probabilities(model, images, context, window=window or images.shape[-1], options=window_options,
                                    memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        targets = batch["masks"] > 0.5
        rows = dice_per_image(probs, targets, threshold=thresholds)
        flags = _fact_flags(batch, facts, probs.device)
        binned = calibration_counts(probs, targets)
        local = [rows, flags, binned.pixels, binned.prob_sum, binned.hits]
        if fit_temperature:
            scaled = temperature_counts(probs, targets)
            local += [scaled.nll, scaled.pixels, scaled.prob_sum, scaled.hits]
        if tune_thresholds:
            sweep = threshold_sweep_counts(probs, targets, components=tune_postprocess, rules=rules,
                                           attached_to=catalogue.attached_to or None)
            local += [sweep.intersection, sweep.pred_sum, sweep.target_sum]
            if tune_postprocess:
                local += [sweep.rule_intersection, sweep.rule_pred_sum]
        # One collective per batch: every per-image tensor travels together (no duplicated last-batch samples).
        rows, flags, *rest = (t.cpu() for t in accelerator.gather_for_metrics(tuple(local)))
        calibrations.append(CalibrationCounts(*rest[:3]))
        rest = rest[3:]
        if fit_temperature:
            temperatures.append(TemperatureCounts(scaled.temperatures, *rest[:4]))
            rest = rest[4:]
        if tune_thresholds:
            sweeps.append(SweepCounts(sweep.candidates, *rest, rules=sweep.rules))
        dice.add(rows)
        flag_rows.append(flags.numpy())
    flag_table = np.concatenate(flag_rows) if flag_rows else np.zeros((0, len(facts)), int)
    result = EvalResult(dice=dice, facts={f: flag_table[:, i] for i, f in enumerate(facts)}, catalogue=catalogue,
                        calibration=CalibrationCounts.concat(calibrations) if calibrations else None,
                        temperature=TemperatureCounts.concat(temperatures) if temperatures else None)
    if tune_thresholds and sweeps:
        result.sweep = SweepCounts.concat(sweeps)
        result.thresholds, result.postprocess, result.tuned_mean_dice = tuned_thresholds(result.sweep)
    else:
        k = len(catalogue)
        result.thresholds = [float(t) for t in np.broadcast_to(np.asarray(thresholds, dtype=float), (k,))]
        result.postprocess = ["none"] * k
    return result
