"""The demo report: training summary, test-set Dice at original resolution, a per-class chart, the post-processing
chosen, validation calibration (ECE and a reliability chart), overlays."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mmseg_text.calibration import reliability_chart
from mmseg_text.io import atomic_save_figure, atomic_write_text
from mmseg_text.run_layout import THRESHOLDS_FILE, VAL_METRICS_FILE, RunLayout

OVERLAYS_SHOWN = 3


WORST_SHOWN = 3


def per_class_chart(evaluation: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(evaluation["per_class"])
    values = [evaluation["per_class"][n] for n in names]
    groups = evaluation.get("class_groups", {})
    # one colour per catalogue group, in catalogue order (any anatomy)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    palette = {g: colours[i % len(colours)] for i, g in enumerate(dict.fromkeys(groups.get(n, "") for n in names))}
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.bar(range(len(names)), values, color=[palette[groups.get(n, "")] for n in names])
    for group, colour in palette.items():
        ax.bar([0], [0], color=colour, label=group or "no group")  # legend entries only
    ax.axhline(evaluation["mean_dice"], color="black", lw=1, ls="--", label=f"mean {evaluation['mean_dice']:.3f}")
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=8)
    ax.set_ylim(max(0.0, min(values) - 0.1), 1.0)
    ax.set_ylabel("Dice (original resolution)")
    ax.legend(loc="lower left")
    where = Path(evaluation["gt"]).parent.name if evaluation.get("gt") else "the scored split"
    ax.set_title(f"per-class Dice, {evaluation.get('num_images', '?')} images of {where}")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=100)
    return path


def write_report(run_dir: str | Path, evaluation_json: str | Path, overlays: Sequence[Path] = (),
                 wall_seconds: float | None = None) -> Path:
    """``run_dir/report.md`` with the figures next to it; paths in the report are relative to run_dir."""
    run_dir = Path(run_dir)
    summary = json.loads(RunLayout(run_dir).summary.read_text())
    evaluation = json.loads(Path(evaluation_json).read_text())
    chart = per_class_chart(evaluation, run_dir / "per_class_dice.png")
    cfg = summary["config"]
    lines = [
        "# mmseg-text demo report", "",
        f"Model: `{cfg['model']['encoder']}` encoder, conditioning `{cfg['model']['conditioning']}`, head "
        f"`{cfg['model']['head']}`, text mode `{cfg['text']['mode']}`, {_resolution(cfg['data'])}.", "",
        "| | value |", "|---|---:|",
        f"| **test mean Dice (original resolution)** | **{evaluation['mean_dice']:.4f}** |",
    ]
    lines += [f"| test Dice, {group} | {value:.4f} |" for group, value in evaluation.get("groups", {}).items()]
    subgroups = evaluation.get("subgroups") or {}
    lines += [f"| test Dice, {label} ({subgroups[f'num_{label}']} images) | {value:.4f} |"
              for label, value in subgroups.items()
              if label != "facts" and not label.startswith("num_") and value is not None]
    worst = sorted(evaluation["per_class"].items(), key=lambda item: item[1])[:WORST_SHOWN]
    lines.append(f"| the {len(worst)} worst classes | " + ", ".join(f"{n} {v:.3f}" for n, v in worst) + " |")
    lines += [
        f"| test images | {evaluation['num_images']} |",
        f"| best validation mean Dice (training resolution) | {summary['best_val_mean_dice']:.4f} (step {summary['best_step']}) |",
        f"| optimizer steps | {summary['steps']} |",
        f"| training time | {summary['train_seconds']:.0f} s ({summary['images_per_second']} images/s) |",
    ]
    if wall_seconds is not None:
        lines.append(f"| demo wall time (data + train + predict + evaluate) | {wall_seconds:.0f} s |")
    best = RunLayout(run_dir).best
    rules = _postprocess_rules(best)
    if rules is not None:
        kept = [f"{name} ({rule})" for name, rule in rules.items() if rule != "none"]
        lines.append(f"| connected-component rule (chosen on validation) | {len(kept)} of {len(rules)} classes"
                     + (f": {', '.join(kept)}" if kept else "") + " |")
    metrics = _validation_metrics(best)
    calibration = metrics.get("calibration")
    if calibration is not None:
        scored = [(n, v) for n, v in calibration["foreground_ece"].items() if v is not None]
        worst_ece = sorted(scored, key=lambda item: -item[1])[:WORST_SHOWN]
        lines.append(f"| validation ECE, all pixels / pixels with p >= {1 / calibration['bins']:.1f} | "
                     f"{_number(calibration['mean_ece'], 4)} / {_number(calibration['mean_foreground_ece'], 3)}"
                     + (" (least calibrated: " + ", ".join(f"{n} {v:.3f}" for n, v in worst_ece) + ")" if worst_ece
                        else "") + " |")
    temperature = metrics.get("temperature")
    if temperature:
        temps = np.array(list(temperature["temperatures"].values()))
        def three(prefix: str, digits: int) -> str:
            return " / ".join(_number(temperature.get(f"mean_{prefix}ece_{k}"), digits)
                              for k in ("t1", "fitted", "cross_fitted"))

        lines.append(f"| temperature scaling (validation): mean ECE at T = 1 / fitted / cross-fitted (2 halves), all "
                     f"pixels; p >= 0.1 | {three('', 4)}; {three('foreground_', 3)} (T from {temps.min():.2f} to "
                     f"{temps.max():.2f}, median {np.median(temps):.2f}) |")
    lines += ["", f"![per-class Dice]({chart.name})", ""]
    if calibration is not None:
        figure = reliability_chart(calibration, run_dir / "reliability.png", "validation, best model")
        lines += [f"![reliability]({figure.name})", ""]
    if overlays:
        lines += ["## Predictions on test images", ""]
        for overlay in list(overlays)[:OVERLAYS_SHOWN]:
            lines.append(f"![{overlay.stem}]({os.path.relpath(Path(overlay).resolve(), run_dir.resolve())})")
        lines.append("")
    lines += ["## Per-class Dice", "", "| class | Dice |", "|---|---:|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in evaluation["per_class"].items()]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _postprocess_rules(model_dir: Path) -> dict[str, str] | None:
    path = model_dir / THRESHOLDS_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return dict(zip(doc["classes"], doc["postprocess"])) if "postprocess" in doc else None


def _validation_metrics(model_dir: Path) -> dict:
    path = model_dir / VAL_METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}



def _resolution(data: dict) -> str:
    working = data.get("cache_size") or data["image_size"]
    crop = data.get("crop_size")
    return f"{crop} px crops of {working} px images" if crop else f"{working} px"
