"""How an ablation is reported: the markdown tables (validation, held-out test, paired comparisons, gates) and the
plots (bars per subset, learning curves, gate trajectories). ``ablation.py`` runs and aggregates; this reads its result.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmseg_text.io import atomic_save_figure

TEST_PREFIX = "test "  # held-out test subsets are named "test <subset>"; the others are validation's


def validation_subsets(result: Mapping[str, Any]) -> list[str]:
    """``mean``, then the catalogue's groups and fact subgroups, as the runs reported them."""
    return [s for s in result["subsets"] if not s.startswith(TEST_PREFIX)]


def test_subsets(result: Mapping[str, Any]) -> list[str]:
    return [s for s in result["subsets"] if s.startswith(TEST_PREFIX)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(cell: dict[str, Any] | None) -> str:
    return "–" if cell is None else f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def to_markdown(result: dict[str, Any], seeds: int) -> str:
    lines = [f"# Text-conditioning ablation ({seeds} seeds per variant)", "",
             "Validation mean Dice at the last step (mean ± std over seeds).", "",
             "| variant | " + " | ".join(validation_subsets(result)) + " |",
             "|---|" + "---|" * len(validation_subsets(result))]
    for name, row in result["variants"].items():
        cells = [_fmt(row.get(s)) for s in validation_subsets(result)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Against the no-text baseline", ""]
    lines += _paired_lines(result["vs_baseline"]) + _verdict_lines(result["vs_baseline"], "no text")
    if result.get("placebo"):
        lines += ["", "## Against the placebo (shuffled captions: each variant against its own `<name> shuffled` twin, "
                      f"else {result['placebo']})", ""]
        lines += _paired_lines(result["vs_placebo"]) + _verdict_lines(result["vs_placebo"], "the shuffled captions")
        lines += ["", "If real captions score like shuffled ones, a gain over no text does not come from what the "
                      "captions say (extra parameters, regularisation or seed luck explain it as well)."]
    if result.get("test"):
        lines += _test_lines(result)
    if result.get("gates"):
        lines += _gate_lines(result["gates"])
    return "\n".join(lines) + "\n"


def final_gates(by_seed: Mapping[int, Sequence]) -> list[tuple[float, float]]:
    """(mean, std) over seeds of each gate's tanh g at the last evaluation."""
    finals = [curve[-1][1] for curve in by_seed.values() if curve]
    return [mean_std([run[i] for run in finals]) for i in range(min(map(len, finals)))] if finals else []


def _gate_lines(gates: Mapping[str, Mapping[int, Sequence]]) -> list[str]:
    lines = ["", "## Text gates at the last evaluation", "",
             "tanh g of each gate in module order (mean ± std over seeds): 0 is a closed gate, the text ignored.", "",
             "| variant | gates |", "|---|---|"]
    for name, by_seed in gates.items():
        cells = ", ".join(f"{m:+.3f} ± {sd:.3f}" for m, sd in final_gates(by_seed))
        lines.append(f"| {name} | {cells} |")
    return lines


def _test_lines(result: dict[str, Any]) -> list[str]:
    """The held-out test split: its table, then the paired comparisons of each compared subset."""
    lines = ["", "## Held-out test split (prediction path, original resolution)", "",
             "Each run's `best/` export predicts ROOT/test with `mmseg-predict --with-meta` (derived facts such as "
             "side and wrist angle from its first pass); subgroups of derived facts (e.g. bent / straight wrists) "
             "by the test annotations' own geometry, the same images for every variant.", "",
             "| variant | " + " | ".join(s.removeprefix(TEST_PREFIX) for s in test_subsets(result)) + " |",
             "|---|" + "---|" * len(test_subsets(result))]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(s)) for s in test_subsets(result)) + " |")
    for subset, comparisons in result["test"].items():
        lines += ["", f"### {subset}: against no text", ""] + _paired_lines(comparisons["vs_baseline"], False)
        if comparisons["vs_placebo"]:
            lines += ["", f"### {subset}: against the shuffled captions", ""]
            lines += _paired_lines(comparisons["vs_placebo"], False)
    return lines


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _paired_lines(verdicts: dict[str, dict[str, Any]], then_unpaired: bool = True) -> list[str]:
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
    return lines + (["", "Unpaired, against the seed spread:", ""] if then_unpaired else [])


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
    subsets = list(result["subsets"])
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(subsets) + 2, 4))
    for i, name in enumerate(names):
        row = result["variants"][name]
        xs = [j + i * width for j in range(len(subsets))]
        ax.bar(xs, [row[s]["mean"] if s in row else math.nan for s in subsets], width,
               yerr=[row[s]["std"] if s in row else 0 for s in subsets], label=name, capsize=2)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(subsets))], subsets)
    ax.set_ylabel("Dice (validation; 'test ...': held-out test)")
    lows = [result["variants"][n][s]["mean"] for n in names for s in subsets if s in result["variants"][n]]
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("text conditioning ablation (mean ± std over seeds)")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)


def plot_gates(gates: Mapping[str, Mapping[int, Sequence]], path: Path) -> None:
    """tanh g of every gate against step, one panel per variant (mean over seeds, band = seed range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(gates)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        runs = [{int(step): values for step, values in curve} for curve in gates[name].values() if curve]
        steps = sorted({step for run in runs for step in run})
        n_gates = min(len(values) for run in runs for values in run.values())
        for i in range(n_gates):
            per_step = [np.array([run[step][i] for run in runs if step in run]) for step in steps]
            line, = ax.plot(steps, [v.mean() for v in per_step], marker="o", ms=3, label=f"gate {i}")
            ax.fill_between(steps, [v.min() for v in per_step], [v.max() for v in per_step],
                            color=line.get_color(), alpha=0.15)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("optimizer step")
    axes[0][0].set_ylabel("tanh g (0 = text ignored)")
    axes[0][-1].legend(fontsize=7)
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
