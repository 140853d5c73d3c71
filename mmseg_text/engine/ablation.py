"""Text on/off ablation: the same config under each ``text.mode`` and a shuffled-caption control, K seeds each.

Each run is a separate ``python -m mmseg_text.cli.train`` process (clean Accelerate state, and a finished
run's ``summary.json`` is reused, so an interrupted ablation continues where it stopped). Scores are the
validation metrics of the *last* step, not the best one: picking the best step on the validation
split would flatter every variant by a different amount.

The design is paired: for one seed every variant shares the data order and augmentation draws (both
seeded by ``train.seed`` alone) and the initial weights of every module they share (``build_model``),
so each variant is judged by its per-seed differences to the reference (``paired_stats.py``): mean,
bootstrap interval and the smallest effect the seeds could have detected.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmseg_text.config import load_config
from mmseg_text.engine.paired_stats import compare_paired
from mmseg_text.models.registry import HEADS
from mmseg_text.text.modes import parse_text_mode
from mmseg_text.io import atomic_save_figure, atomic_write_json, atomic_write_text


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
          "film": ("text.mode=meta", "model.conditioning=film", "model.head=conv"),
          # the head alone: per-class queries from the bone names, no decoder conditioning
          "text_query": ("text.mode=meta+classes", "model.conditioning=none", "model.head=text_query")}
POSITIVE_CONTROL = (Variant("none", ("text.mode=none", "model.conditioning=none", "model.head=conv", _PROMPTED)),) + tuple(
    v for name, sets in _TYPES.items()
    for v in (Variant(name, sets + (_PROMPTED,)), Variant(f"{name} shuffled", sets + (_PROMPTED, "text.shuffle=true"))))
SUBSETS = ("mean", "finger", "carpal", "forearm", "bent", "straight")


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
                 variants: Sequence[Variant] = VARIANTS, launcher: Sequence[str] | None = None) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    launcher = list(launcher or [sys.executable, "-m", "mmseg_text.cli.train"])
    runs: dict[str, dict[int, dict[str, float]]] = {}
    curves: dict[str, dict[int, list]] = {}  # variant -> seed -> [[step, validation Dice], ...]
    for variant in variants:
        run_overrides = _with_head_fallback(config, list(overrides) + list(variant.overrides))
        for seed in range(seeds):
            run_dir = _run_dir(out, variant, seed)
            summary_path = run_dir / "summary.json"
            if not summary_path.exists():
                cmd = launcher + (["--config", config] if config else []) + run_overrides + [
                    f"train.seed={seed}", f"output_dir={run_dir}"]
                print(f"[ablation] {variant.name} seed {seed}: {' '.join(cmd)}", flush=True)
                subprocess.run(cmd, check=True)
            summary = json.loads(summary_path.read_text())
            runs.setdefault(variant.name, {})[seed] = _scores(summary)
            curves.setdefault(variant.name, {})[seed] = summary.get("val_curve") or []
    result = aggregate(runs)
    result["curves"] = curves
    atomic_write_json(out / "ablation.json", result)
    atomic_write_text(out / "ablation.md", to_markdown(result, seeds))
    plot(result, out / "ablation.png")
    plot_curves(curves, out / "ablation_curves.png")
    return result


def _scores(summary: dict[str, Any]) -> dict[str, float]:
    last = summary["last"]
    scores = {"mean": last["mean_dice"]}
    scores.update(last.get("grouped", {}))
    scores.update({k: v for k, v in last.get("wrist", {}).items() if v is not None})
    return scores


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
    for name, seed_scores in runs.items():
        table[name] = {}
        by_seed = _by_seed(seed_scores)
        for subset in SUBSETS:
            seeds = [seed for seed, s in by_seed.items() if subset in s]
            values = [by_seed[seed][subset] for seed in seeds]
            if values:
                m, sd = _mean_std(values)
                table[name][subset] = {"mean": m, "std": sd, "values": values, "seeds": seeds}
    placebo = next((n for n in table if "shuffled" in n), None)
    vs_placebo: dict[str, dict[str, Any]] = {}
    for name in table:  # each variant against its own shuffled twin when it has one, else the common placebo
        if name == BASELINE or "shuffled" in name:
            continue
        reference = f"{name} shuffled" if f"{name} shuffled" in table else placebo
        if reference:
            vs_placebo.update(_compare({name: table[name], reference: table[reference]}, reference, skip={reference}))
    return {"variants": table, "baseline": BASELINE, "placebo": placebo,
            "vs_baseline": _compare(table, BASELINE, skip={BASELINE}),
            # Real captions against the shuffled ones: the test of whether what the captions *say* matters.
            "vs_placebo": vs_placebo}


def _compare(table: dict[str, dict[str, Any]], reference: str, skip: set) -> dict[str, dict[str, Any]]:
    verdicts = {}
    ref = table.get(reference, {}).get("mean")
    for name, row in table.items():
        if name in skip or ref is None or "mean" not in row:
            continue
        diff = row["mean"]["mean"] - ref["mean"]
        spread = max(row["mean"]["std"], ref["std"])
        # With a handful of seeds, a difference smaller than the seed-to-seed spread is noise.
        within = abs(diff) <= spread or spread == 0.0 and len(row["mean"]["values"]) < 2
        paired = compare_paired(_seed_values(row["mean"]), _seed_values(ref))  # seeds finished for both
        verdicts[name] = {"diff": diff, "seed_spread": spread, "within_spread": bool(within),
                          "paired": paired.to_dict()}
    return verdicts


def _seed_values(cell: dict[str, Any]) -> dict[int, float]:
    return dict(zip(cell.get("seeds", range(len(cell["values"]))), cell["values"]))


def _fmt(cell: dict[str, Any] | None) -> str:
    return "–" if cell is None else f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def to_markdown(result: dict[str, Any], seeds: int) -> str:
    lines = [f"# Text-conditioning ablation ({seeds} seeds per variant)", "",
             "Validation mean Dice at the last step (mean ± std over seeds).", "",
             "| variant | mean | fingers | carpals | forearm | bent wrists | straight wrists |",
             "|---|---|---|---|---|---|---|"]
    for name, row in result["variants"].items():
        cells = [_fmt(row.get(s)) for s in SUBSETS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Against the no-text baseline", ""]
    lines += _paired_lines(result["vs_baseline"]) + _verdict_lines(result["vs_baseline"], "no text")
    if result.get("placebo"):
        lines += ["", "## Against the placebo (shuffled captions: each variant against its own `<name> shuffled` twin, "
                      f"else {result['placebo']})", ""]
        lines += _paired_lines(result["vs_placebo"]) + _verdict_lines(result["vs_placebo"], "the shuffled captions")
        lines += ["", "If real captions score like shuffled ones, a gain over no text does not come from what the "
                      "captions say (extra parameters, regularisation or seed luck explain it as well)."]
    return "\n".join(lines) + "\n"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _paired_lines(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """The paired table: mean per-seed difference, its 95 % bootstrap interval, detectable effect, verdict."""
    if not verdicts:
        return []
    lines = ["Paired by seed (same data order, augmentation and initial shared weights): mean Dice difference, "
             "its 95 % bootstrap interval, and the minimum detectable effect (MDE, 80 % power, two-sided "
             "alpha 0.05). \"No difference\" with an MDE larger than the effect that matters means too few "
             "seeds, not equal variants.", "",
             "| variant | seeds | paired diff | 95 % CI (bootstrap) | 95 % CI (t) | MDE | verdict |",
             "|---|---|---|---|---|---|---|"]
    for name, v in verdicts.items():
        p = v["paired"]
        ci = "–" if p["ci_low"] is None else f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"
        t_ci = "–" if p.get("t_low") is None else f"[{p['t_low']:+.4f}, {p['t_high']:+.4f}]"
        lines.append(f"| {name} | {p['n']} | {_num(p['mean_diff'], '+.4f')} | {ci} | {t_ci} | {_num(p['mde'], '.4f')} "
                     f"| {p['verdict']} |")
    return lines + ["", "Unpaired, against the seed spread:", ""]


def _verdict_lines(verdicts: dict[str, dict[str, Any]], against: str) -> list[str]:
    lines = []
    for name, v in verdicts.items():
        if v["within_spread"]:
            verdict = f"within the seed spread: no evidence that it differs from {against}"
        else:
            verdict = f"{'better' if v['diff'] > 0 else 'worse'} than {against} by more than the seed spread"
        lines.append(f"- **{name}**: {v['diff']:+.4f} Dice (seed spread {v['seed_spread']:.4f}) — {verdict}.")
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["variants"])
    subsets = [s for s in SUBSETS if any(s in result["variants"][n] for n in names)]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(subsets) + 2, 4))
    for i, name in enumerate(names):
        row = result["variants"][name]
        xs = [j + i * width for j in range(len(subsets))]
        ax.bar(xs, [row[s]["mean"] if s in row else math.nan for s in subsets], width,
               yerr=[row[s]["std"] if s in row else 0 for s in subsets], label=name, capsize=2)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(subsets))], subsets)
    ax.set_ylabel("validation Dice")
    lows = [result["variants"][n][s]["mean"] for n in names for s in subsets if s in result["variants"][n]]
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("text conditioning ablation (mean ± std over seeds)")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)


def plot_curves(curves: Mapping[str, Mapping[int, Sequence[Sequence[float]]]], path: Path) -> None:
    """Validation Dice against step per variant: mean over seeds, the band from the lowest to the highest seed.
    Whether a study ran past the steep part of learning is read here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, by_seed in curves.items():
        points: dict[int, list[float]] = {}
        for curve in by_seed.values():
            for step, dice in curve:
                points.setdefault(int(step), []).append(float(dice))
        if not points:
            continue
        steps = sorted(points)
        values = [np.asarray(points[s]) for s in steps]
        line, = ax.plot(steps, [v.mean() for v in values], marker="o", ms=3, label=name)
        ax.fill_between(steps, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation mean Dice")
    ax.set_title("learning curves (mean over seeds, band = seed range)")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
