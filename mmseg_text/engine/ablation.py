"""Text on/off ablation: the same config under each ``text.mode`` and a shuffled-caption control, K seeds each.

Each run is a separate ``python -m mmseg_text.cli.train`` process (clean Accelerate state, and a finished
run's ``summary.json`` is reused, so an interrupted ablation continues where it stopped). Scores are the
validation metrics of the *last* step, not the best one: picking the best step on the validation
split would flatter every variant by a different amount.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmseg_text.config import load_config
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
    runs: dict[str, list[dict[str, Any]]] = {}
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
            runs.setdefault(variant.name, []).append(_scores(json.loads(summary_path.read_text())))
    result = aggregate(runs)
    atomic_write_json(out / "ablation.json", result)
    atomic_write_text(out / "ablation.md", to_markdown(result, seeds))
    plot(result, out / "ablation.png")
    return result


def _scores(summary: dict[str, Any]) -> dict[str, float]:
    last = summary["last"]
    scores = {"mean": last["mean_dice"]}
    scores.update(last.get("grouped", {}))
    scores.update({k: v for k, v in last.get("wrist", {}).items() if v is not None})
    return scores


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Mean ± std per variant and subset, and each variant's difference to the no-text baseline."""
    table: dict[str, dict[str, Any]] = {}
    for name, seed_scores in runs.items():
        table[name] = {}
        for subset in SUBSETS:
            values = [s[subset] for s in seed_scores if subset in s]
            if values:
                m, sd = _mean_std(values)
                table[name][subset] = {"mean": m, "std": sd, "values": values}
    placebo = next((n for n in table if "shuffled" in n), None)
    return {"variants": table, "baseline": BASELINE, "placebo": placebo,
            "vs_baseline": _compare(table, BASELINE, skip={BASELINE}),
            # Real captions against the shuffled ones: the test of whether what the captions *say* matters.
            "vs_placebo": _compare(table, placebo, skip={BASELINE, placebo}) if placebo else {}}


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
        verdicts[name] = {"diff": diff, "seed_spread": spread, "within_spread": bool(within)}
    return verdicts


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
    lines += _verdict_lines(result["vs_baseline"], "no text")
    if result.get("placebo"):
        lines += ["", f"## Against the placebo ({result['placebo']}: each image paired with another person's metadata)", ""]
        lines += _verdict_lines(result["vs_placebo"], "the shuffled captions")
        lines += ["", "If real captions score like shuffled ones, a gain over no text does not come from what the "
                      "captions say (extra parameters, regularisation or seed luck explain it as well)."]
    return "\n".join(lines) + "\n"


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
