"""Text on/off ablation: the same config under each ``text.mode`` and a shuffled-caption control, K seeds each.

Each run is a separate ``python -m mmseg_text.cli.train`` process (clean Accelerate state, and a finished
run's ``summary.json`` is reused, so an interrupted ablation continues where it stopped). Scores are the
validation metrics of the *last* step, not the best one: picking the best step on the validation
split would flatter every variant by a different amount.

The design is paired: for one seed every variant shares the data order and augmentation draws (both
seeded by ``train.seed`` alone) and the initial weights of every module they share (``build_model``),
so each variant is judged by its per-seed differences to the reference (``paired_stats.py``): mean,
bootstrap interval and the smallest effect the seeds could have detected. The tables and plots: ``ablation_report.py``.

With ``test=True`` (a labelled ROOT/test, as in the synthetic data) each run is also scored on the test split
through the prediction path, bent and straight wrists apart (``held_out.py``).
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmseg_text.config import load_config
from mmseg_text.studies.ablation_report import (TEST_PREFIX, final_gates, mean_std, plot, plot_curves,
                                               plot_gates, to_markdown)
from mmseg_text.studies.held_out import held_out_scores, labelled_test_split, score_run, subgroup_facts
from mmseg_text.studies.paired_stats import compare_paired
from mmseg_text.choices import HEADS, parse_text_mode
from mmseg_text.io import atomic_write_json, atomic_write_text
from mmseg_text.run_layout import RunLayout


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]


VARIANTS = (
    Variant("none", ("text.mode=none", "model.conditioning=none")),
    Variant("classes", ("text.mode=classes",)),
    Variant("meta", ("text.mode=meta",)),
    Variant("meta+classes", ("text.mode=meta+classes",)),
    # Placebo: every image is paired with another person's metadata caption.
    Variant("meta+classes shuffled", ("text.mode=meta+classes", "text.shuffle=true")),
)
BASELINE = "none"

# Positive control (data/prompts.py): the caption asks for a random set of bone groups and only those are targets,
# so a text path that works must beat no text, and its own shuffled-prompt control, by a wide margin.
_PROMPTED = "data.prompted_groups=true"
_TYPES = {"cross_attn": ("text.mode=meta", "model.conditioning=cross_attn", "model.head=conv"),
          "film": ("text.mode=meta", "model.conditioning=film", "model.head=conv")}
# Not the text-query head: its queries are the bone names, the same for every image, so no caption reaches it; it
# names classes and reads no per-image fact (README, "Can the text path carry information at all?").
POSITIVE_CONTROL = (Variant("none", ("text.mode=none", "model.conditioning=none", "model.head=conv", _PROMPTED)),) + tuple(
    v for name, sets in _TYPES.items()
    for v in (Variant(name, sets + (_PROMPTED,)), Variant(f"{name} shuffled", sets + (_PROMPTED, "text.shuffle=true"))))


def _run_dir(out: Path, variant: Variant, seed: int) -> Path:
    return out / variant.name.replace(" ", "_").replace("+", "_") / f"seed{seed}"


def _with_head_fallback(config: str | None, overrides: list[str]) -> list[str]:
    """A head that reads class-name embeddings (models/registry.py) cannot run in a variant without them:
    that variant gets the conv head instead (said here, and recorded in the run's config.yaml)."""
    base = load_config(config, [o for o in overrides if not o.startswith(("text.mode=", "model.conditioning="))])
    mode = parse_text_mode(next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("text.mode=")),
                                base.text.mode))
    if HEADS[base.model.head].needs_class_embeddings and not mode.uses_classes:
        print(f"[ablation] text.mode={mode.name}: model.head={base.model.head} needs class names; using model.head=conv")
        overrides = overrides + ["model.head=conv"]
    load_config(config, overrides)  # every variant's config is valid before the first run starts
    return overrides


def run_ablation(config: str | None, out: str | Path, seeds: int, overrides: Sequence[str] = (),
                 variants: Sequence[Variant] = VARIANTS, launcher: Sequence[str] | None = None,
                 test: bool = False) -> dict[str, Any]:
    """Train (or reuse) every variant x seed, then aggregate; ``test``: also score each run on ROOT/test."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    launcher = list(launcher or [sys.executable, "-m", "mmseg_text.cli.train"])
    facts_csv = _test_facts_for(config, overrides, out) if test else None
    runs: dict[str, dict[int, dict[str, float]]] = {}
    curves: dict[str, dict[int, list]] = {}  # variant -> seed -> [[step, validation Dice], ...]
    gates: dict[str, dict[int, list]] = {}  # variant -> seed -> [[step, [tanh g per gate]], ...] (text on)
    for variant in variants:
        run_overrides = _with_head_fallback(config, list(overrides) + list(variant.overrides))
        for seed in range(seeds):
            run_dir = _run_dir(out, variant, seed)
            summary_path = RunLayout(run_dir).summary
            if not summary_path.exists():
                cmd = launcher + (["--config", config] if config else []) + run_overrides + [
                    f"train.seed={seed}", f"output_dir={run_dir}"]
                print(f"[ablation] {variant.name} seed {seed}: {' '.join(cmd)}", flush=True)
                subprocess.run(cmd, check=True)
            summary = json.loads(summary_path.read_text())
            runs.setdefault(variant.name, {})[seed] = _scores(summary)
            if facts_csv is not None:
                runs[variant.name][seed].update(held_out_scores(score_run(run_dir, facts_csv)))
            curves.setdefault(variant.name, {})[seed] = summary.get("val_curve") or []
            if summary.get("gate_curve"):
                gates.setdefault(variant.name, {})[seed] = summary["gate_curve"]
    result = aggregate(runs)
    result["curves"] = curves
    result["gates"] = gates
    atomic_write_json(out / "ablation.json", result)
    atomic_write_text(out / "ablation.md", to_markdown(result, seeds))
    plot(result, out / "ablation.png")
    plot_curves(curves, out / "ablation_curves.png")
    if gates:
        plot_gates(gates, out / "ablation_gates.png")
    return result


def _test_facts_for(config: str | None, overrides: Sequence[str], out: Path) -> Path:
    """The study's test subgroups (from the test annotations), or an error naming the missing folder."""
    data = load_config(config, list(overrides)).data
    if not labelled_test_split(data.root):
        raise FileNotFoundError(f"--test needs a labelled test split: no annotation JSONs under "
                                f"{Path(data.root) / 'test' / 'outputs_json'} (images in {Path(data.root) / 'test' / 'DCM'})")
    return subgroup_facts(data.root, data.classes, out / "test_facts.csv")


def _scores(summary: dict[str, Any]) -> dict[str, float]:
    last = summary["last"]
    scores = {"mean": last["mean_dice"]}
    scores.update(last.get("grouped", {}))
    scores.update({k: v for k, v in last.get("subgroups", {}).items() if v is not None})
    return scores


def _by_seed(seed_scores: Mapping[int, dict[str, float]] | Sequence[dict[str, float]]) -> dict[int, dict[str, float]]:
    """seed -> scores; a plain list is read as seeds 0, 1, ... in order."""
    if isinstance(seed_scores, Mapping):
        return {int(seed): scores for seed, scores in sorted(seed_scores.items())}
    return dict(enumerate(seed_scores))


def aggregate(runs: Mapping[str, Mapping[int, dict[str, float]] | Sequence[dict[str, float]]]) -> dict[str, Any]:
    """Mean ± std per variant and subset, and each variant's difference to the no-text baseline and the placebo.

    ``runs`` maps a variant to its scores per seed (seed -> scores, or a list for seeds 0, 1, ...).
    """
    table: dict[str, dict[str, Any]] = {}
    # the subsets the runs reported (mean, the catalogue's groups and fact subgroups, their test twins), in order
    subsets = list(dict.fromkeys(k for seed_scores in runs.values() for scores in _by_seed(seed_scores).values()
                                 for k in scores))
    for name, seed_scores in runs.items():
        table[name] = {}
        by_seed = _by_seed(seed_scores)
        for subset in subsets:
            seeds = [seed for seed, s in by_seed.items() if subset in s]
            values = [by_seed[seed][subset] for seed in seeds]
            if values:
                m, sd = mean_std(values)
                table[name][subset] = {"mean": m, "std": sd, "values": values, "seeds": seeds}
    placebo = next((n for n in table if "shuffled" in n), None)
    result = {"variants": table, "subsets": subsets, "baseline": BASELINE, "placebo": placebo,
              "vs_baseline": _compare(table, BASELINE, skip={BASELINE}),
              # Real captions against the shuffled ones: the test of whether what the captions *say* matters.
              "vs_placebo": _against_placebo(table, placebo)}
    scored = [s for s in subsets if s.startswith(TEST_PREFIX)]
    if scored:  # the held-out test split, the same comparisons seed by seed per subset
        result["test"] = {s: {"vs_baseline": _compare(table, BASELINE, skip={BASELINE}, subset=s),
                              "vs_placebo": _against_placebo(table, placebo, subset=s)} for s in scored}
    return result


def _against_placebo(table: dict[str, dict[str, Any]], placebo: str | None, subset: str = "mean"
                     ) -> dict[str, dict[str, Any]]:
    """Each variant against its own shuffled twin when it has one, else the common placebo."""
    verdicts: dict[str, dict[str, Any]] = {}
    for name in table:
        if name == BASELINE or "shuffled" in name:
            continue
        reference = f"{name} shuffled" if f"{name} shuffled" in table else placebo
        if reference:
            verdicts.update(_compare({name: table[name], reference: table[reference]}, reference, skip={reference},
                                     subset=subset))
    return verdicts


def _compare(table: dict[str, dict[str, Any]], reference: str, skip: set, subset: str = "mean"
             ) -> dict[str, dict[str, Any]]:
    verdicts = {}
    ref = table.get(reference, {}).get(subset)
    for name, row in table.items():
        if name in skip or ref is None or subset not in row:
            continue
        cell = row[subset]
        diff = cell["mean"] - ref["mean"]
        spread = max(cell["std"], ref["std"])
        # With a handful of seeds, a difference smaller than the seed-to-seed spread is noise.
        within = abs(diff) <= spread or spread == 0.0 and len(cell["values"]) < 2
        paired = compare_paired(_seed_values(cell), _seed_values(ref))  # seeds finished for both
        verdicts[name] = {"diff": diff, "seed_spread": spread, "within_spread": bool(within),
                          "paired": paired.to_dict()}
    return verdicts


def _seed_values(cell: dict[str, Any]) -> dict[int, float]:
    return dict(zip(cell.get("seeds", range(len(cell["values"]))), cell["values"]))


__all__ = ["BASELINE", "POSITIVE_CONTROL", "VARIANTS", "Variant", "aggregate",
           "final_gates", "run_ablation", "to_markdown"]
