"""Is it the text or the metadata? One resumable study that answers both parts of the question.

1. On the plain synthetic set: no conditioning, the metadata caption (text tower), the same metadata as numbers
   (``model.conditioning_source=numbers``) and the shuffled caption (another person's metadata), K paired seeds.
2. Dose-response: the same four variants on copies of the data whose images say less and less about the bones
   (``mmseg-make-synthetic --degrade L``: the same people, masks and metadata; bone contrast faded, blur and
   noise added), fewer seeds per level. The person's height, sex and age set the hand's size and bone width in
   this generator, so as the pixels fade the metadata should be worth more: conditioning minus none against L.
   ``fade="bones"`` keeps the soft-tissue silhouette (which already shows the hand's place, size and side);
   ``fade="hand"`` fades the whole hand and its side letter, so at L = 1 only the metadata tells: the control
   that rewards metadata by construction. Each fade writes its own study files (``metadata_study[_hand].*``);
   the plain level is shared.

Each level is an ``ablation.run_ablation`` (a finished run's summary is reused, so the study resumes), scored on
the held-out test split; ``metadata_study.{json,md,png}`` gather the paired differences to the no-text run.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from mmseg_text.io import atomic_save_figure, atomic_write_json, atomic_write_text
from mmseg_text.studies.ablation import BASELINE, Variant, run_ablation
from mmseg_text.studies.paired_stats import compare_paired

CAPTION = ("text.mode=meta", "model.conditioning_source=text")
VARIANTS = (
    Variant(BASELINE, ("text.mode=none", "model.conditioning=none")),
    Variant("captions", CAPTION),
    Variant("numbers", ("text.mode=meta", "model.conditioning_source=numbers")),
    Variant("captions shuffled", CAPTION + ("text.shuffle=true",)),
)
# The plain set only: the text modules at 10x the learning rate (train.text_lr_scale), since the gates open slowly.
TEXT_LR_POINT = Variant("captions text_lr x10", CAPTION + ("train.text_lr_scale=10",))
LEVELS = (0.5, 1.0)  # degradation levels of the dose-response; level 0 is the plain set itself
SCORE = "test mean"


def level_name(level: float, fade: str = "bones") -> str:
    """``degrade0.5`` (bones fade) or ``degrade0.5_hand``: the name of a level's data copy and run folder."""
    return f"degrade{level:g}" + ("" if fade == "bones" or level == 0 else f"_{fade}")


def degraded_root(root: Path, level: float, fade: str = "bones") -> Path:
    """Where the copy of ``root`` degraded to ``level`` lives: beside it, named by the level (and the fade)."""
    return root.parent / f"{root.name}_{level_name(level, fade)}"


def study_stem(fade: str) -> str:
    return "metadata_study" + ("" if fade == "bones" else f"_{fade}")


def run_metadata_study(config: Optional[str], out: str | Path, *, root: str | Path, ids: int, size: int,
                       data_seed: int = 0, seeds: int = 5, level_seeds: int = 3, levels: Sequence[float] = LEVELS,
                       overrides: Sequence[str] = (), variants: Sequence[Variant] = VARIANTS,
                       plain_extra: Sequence[Variant] = (), fade: str = "bones",
                       make_data: Optional[Callable[..., Any]] = None, ablate: Callable[..., dict] = run_ablation
                       ) -> dict[str, Any]:
    """Train (or reuse) every variant x seed on the plain set and on each degraded copy, then write the study.

    ``root`` is the plain set (made by ``mmseg-make-synthetic --ids IDS --size SIZE --seed DATA_SEED``); the
    degraded copies are made beside it with the same arguments when missing. ``plain_extra``: variants run on the
    plain set only (``TEXT_LR_POINT``). ``fade``: what the degradation hides (see the module docstring)."""
    from mmseg_text.data.synthetic import check_fade, generate_dataset

    check_fade(fade)
    make_data = make_data or generate_dataset
    out, root = Path(out), Path(root)
    plain = dict(root=root, level=0.0, seeds=seeds, variants=list(variants) + list(plain_extra))
    sets = [plain] + [dict(root=degraded_root(root, lv, fade), level=float(lv), seeds=level_seeds,
                           variants=list(variants)) for lv in levels]
    per_level = []
    for s in sets:
        make_data(s["root"], ids=ids, size=size, seed=data_seed, degrade=s["level"], fade=fade, skip_existing=True,
                  progress=False)
        result = ablate(config, out / level_name(s["level"], fade), s["seeds"],
                        list(overrides) + [f"data.root={s['root']}"], s["variants"], test=True)
        per_level.append({"level": s["level"], "root": str(s["root"]), "seeds": s["seeds"], "result": result})
    study = summarise(per_level, [v.name for v in list(variants) + list(plain_extra)])
    study["fade"] = fade
    stem = study_stem(fade)
    atomic_write_json(out / f"{stem}.json", study)
    atomic_write_text(out / f"{stem}.md", to_markdown(study))
    plot_dose_response(study, out / f"{stem}.png")
    return study


def summarise(per_level: Sequence[dict[str, Any]], names: Sequence[str], score: str = SCORE) -> dict[str, Any]:
    """Per level: each variant's mean ± std and its paired difference to no conditioning (``score``)."""
    levels = []
    for entry in per_level:
        result = entry["result"]
        table = result["variants"]
        row: dict[str, Any] = {"level": entry["level"], "root": entry["root"], "seeds": entry["seeds"],
                               "variants": {}, "vs_none": {}}
        for name in names:
            if score in table.get(name, {}):
                cell = table[name][score]
                row["variants"][name] = {"mean": cell["mean"], "std": cell["std"], "values": cell["values"]}
        for name, verdict in result.get("test", {}).get(score, {}).get("vs_baseline", {}).items():
            row["vs_none"][name] = verdict["paired"]
        if score in table.get("numbers", {}) and score in table.get("captions", {}):  # the text or the metadata?
            by_seed = {n: dict(zip(table[n][score]["seeds"], table[n][score]["values"])) for n in ("numbers", "captions")}
            row["numbers_vs_captions"] = compare_paired(by_seed["numbers"], by_seed["captions"]).to_dict()
        levels.append(row)
    return {"score": score, "variants": list(names), "levels": levels}


def _fmt(x: float, signed: bool = False) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:+.3f}" if signed else f"{x:.3f}")


def to_markdown(study: dict[str, Any]) -> str:
    names = study["variants"]
    hides = {"bones": "the bones fade, the hand's silhouette stays",
             "hand": "the whole hand fades: at 1 only the metadata tells"}.get(study.get("fade", "bones"), "")
    lines = [f"# Is it the text or the metadata? ({study['score']}, mean ± std over seeds; {hides})", "",
             "| degradation | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in study["levels"]:
        cells = [f"{_fmt(row['variants'][n]['mean'])} ± {_fmt(row['variants'][n]['std'])}"
                 if n in row["variants"] else "—" for n in names]
        lines.append(f"| {row['level']:g} | {row['seeds']} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference to no conditioning, per level: mean [95 % bootstrap] (paired t), MDE, verdict", "",
              "| degradation | variant | difference | t interval | MDE | verdict |", "|---|---|---|---|---|---|"]
    for row in study["levels"]:
        for name, p in row["vs_none"].items():
            lines.append(f"| {row['level']:g} | {name} | {_fmt(p['mean_diff'], True)} [{_fmt(p['ci_low'], True)}, "
                         f"{_fmt(p['ci_high'], True)}] | [{_fmt(p['t_low'], True)}, {_fmt(p['t_high'], True)}] | "
                         f"{_fmt(p['mde'])} | {p['verdict']} |")
        p = row.get("numbers_vs_captions")
        if p:
            lines.append(f"| {row['level']:g} | numbers − captions | {_fmt(p['mean_diff'], True)} [{_fmt(p['ci_low'], True)}, "
                         f"{_fmt(p['ci_high'], True)}] | [{_fmt(p['t_low'], True)}, {_fmt(p['t_high'], True)}] | "
                         f"{_fmt(p['mde'])} | {p['verdict']} |")
    return "\n".join(lines) + "\n"


def plot_dose_response(study: dict[str, Any], path: Path) -> None:
    """Conditioning minus none against the degradation level, one line per variant, bars = paired t interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [n for n in study["variants"] if n != BASELINE]
    colour = {n: f"C{i}" for i, n in enumerate(study["variants"])}  # one colour per variant in both panels
    for name in study["variants"]:
        pts = [(r["level"], r["variants"][name]) for r in study["levels"] if name in r["variants"]]
        left.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts], yerr=[p[1]["std"] for p in pts],
                      marker="o", capsize=3, label=name, color=colour[name])
    for k, name in enumerate(names):
        pts = [(r["level"], r["vs_none"][name]) for r in study["levels"] if name in r["vs_none"]]
        xs = [p[0] + 0.015 * (k - 1) for p in pts]
        ys = [p[1]["mean_diff"] for p in pts]
        err = [[y - p[1]["t_low"] for y, p in zip(ys, pts)], [p[1]["t_high"] - y for y, p in zip(ys, pts)]]
        err = [[0 if math.isnan(e) else e for e in side] for side in err]
        right.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name, color=colour[name])
    right.axhline(0.0, color="grey", lw=0.8)
    what = "whole hand fades" if study.get("fade") == "hand" else "bones fade"
    left.set(xlabel=f"image degradation level ({what})", ylabel=f"{study['score']} Dice", title="mean ± std over seeds")
    right.set(xlabel=f"image degradation level ({what})", ylabel="minus no conditioning (paired)",
              title="what the metadata is worth (95 % t interval)")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)


__all__ = ["LEVELS", "TEXT_LR_POINT", "VARIANTS", "degraded_root", "level_name", "plot_dose_response",
           "run_metadata_study", "study_stem", "summarise", "to_markdown"]
