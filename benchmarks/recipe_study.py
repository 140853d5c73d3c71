"""Which switches of the winners' recipe help here? Each variant of the demo recipe trained with the same step
budget under several seeds, scored by test Dice at original resolution; JSON and a markdown table on stdout.

Variants (each against ``whole256``, the demo recipe on data with 1024 px sources):
  whole256          the whole image downscaled to 256 (today's default)
  crops256_of_1024  256 crops from a 1024 cache (foreground-aware), validation and prediction in 256 windows
                    (window overlap 0.25), Dice over the batch (the default on crops)
  crops256_of_1024_image_dice  the same with per-image Dice (the loss before crops had their own default)
  crops256_of_512   256 crops from a 512 cache: a crop spans half the image, as 1024 crops of 2048 originals do
  crops256_of_1024_coords / crops256_of_512_coords  the same crops with coordinate channels (model.coord_channels:
                    the y, x of each pixel in the whole image), so that a crop knows which finger it shows
  crops512_of_1024_coords  512 crops of the 1024 cache with coordinates: the winners' ratio (half the side) at 1024,
                    each step 4x the pixels of the others
  ema               + timm ModelEmaV3 of the weights (validated and exported)
  swa               + stochastic weight averaging of the last quarter (a snapshot every 10 steps, BatchNorm refreshed)
  copy_paste        + carpal copy-paste, p=0.5
  dice_focal        MONAI Dice+Focal instead of BCE+Dice
  lite2             the ImageNet EfficientNet-Lite2 encoder (package:efficientnet-lite2) instead of Lite0
  largest_cc        + per class, keep only the largest connected component where that raises validation Dice
                    (train.tune_postprocess); the same seed trains the same weights as whole256, so the pair
                    differs only in the rules (and in which validation step is kept)
  fold0 / folds     one 3-fold run: its fold-0 model alone (its own validation thresholds) vs the 3-model
                    ensemble with out-of-fold thresholds
Every run is a separate ``python -m mmseg_text.cli.train`` process; a run whose summary.json (or evaluation.json)
exists is reused, so an interrupted study resumes. ``--jobs`` runs go side by side with one thread each (the
scores do not depend on it; do not read the seconds of a study run with --jobs > 1). The split is the same for
every seed (data.split_seed); seeds change initialisation, sample order and augmentation.

    .venv/bin/python benchmarks/recipe_study.py --root data/synthetic_1024 --out runs/recipe --seeds 0 1 --steps 250
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mmseg_text.studies.paired_stats import compare_paired

REPO = Path(__file__).resolve().parent.parent
FINGERTIPS = ["finger-1", "finger-4", "finger-8", "finger-12", "finger-16"]
VARIANTS: dict[str, list[str]] = {
    "whole256": [],
    "crops256_of_1024": ["data.cache_size=1024", "data.crop_size=256", "predict.window_overlap=0.25"],
    "crops256_of_1024_image_dice": ["data.cache_size=1024", "data.crop_size=256", "predict.window_overlap=0.25",
                                    "train.batch_dice=false"],
    "crops256_of_512": ["data.cache_size=512", "data.crop_size=256", "predict.window_overlap=0.25"],
    "crops256_of_1024_coords": ["data.cache_size=1024", "data.crop_size=256", "predict.window_overlap=0.25",
                                "model.coord_channels=true"],
    "crops512_of_1024_coords": ["data.cache_size=1024", "data.crop_size=512", "predict.window_overlap=0.25",
                                "model.coord_channels=true"],
    "crops256_of_512_coords": ["data.cache_size=512", "data.crop_size=256", "predict.window_overlap=0.25",
                               "model.coord_channels=true"],
    "ema": ["train.ema_decay=0.99"],
    "swa": ["train.averaging=swa", "train.swa_start=0.75", "train.swa_every=10"],
    "copy_paste": ["data.copy_paste_p=0.5", "data.copy_paste_groups=[carpal]"],
    "dice_focal": ["train.loss=dice_focal"],
    "lite2": ["model.encoder=tf_efficientnet_lite2", "model.encoder_weights=package:efficientnet-lite2"],
    "largest_cc": ["train.tune_postprocess=true"],
}
FOLDS = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/synthetic_1024", help="dataset root (make it with make_synthetic --size 1024)")
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--out", default="runs/recipe")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS) + ["folds"])
    p.add_argument("--tta", action="store_true",
                   help="predict with flip TTA, as make demo does (default: no TTA, as the tables above)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides given to every run (e.g. data.image_size=128 for a cheaper study)")
    return p.parse_args(argv)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ACCELERATE_USE_CPU="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if code:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({code}); see {log}")


def _train(args, run: Path, overrides: list[str], seed: int, env, folds: bool = False) -> None:
    done = run / ("thresholds.json" if folds else "summary.json")
    if done.exists():
        return
    cmd = [sys.executable, "-m", "mmseg_text.cli.train", *(["--folds", "all"] if folds else []), "--config",
           args.config, f"data.root={args.root}", f"output_dir={run}", f"train.max_steps={args.steps}",
           f"train.seed={seed}", "train.checkpoint_every=0", "data.num_workers=0", *args.set, *overrides,
           *([f"data.num_folds={FOLDS}"] if folds else [])]
    _run(cmd, run / "study.log", env)


def _score(args, checkpoint: Path, out: Path, env) -> dict:
    evaluation = out / "evaluation.json"
    if not evaluation.exists():
        root = Path(args.root)
        csv = out / "submission.csv"
        _run([sys.executable, "-m", "mmseg_text.cli.predict", "--checkpoint", str(checkpoint), "--images",
              str(root / "test" / "DCM"), "--with-meta", "--meta", str(root / "meta_data.xlsx"),
              *([] if args.tta else ["--no-tta"]), "--device", "cpu", "--out", str(csv)], out / "study.log", env)
        _run([sys.executable, "-m", "mmseg_text.cli.evaluate", "--pred", str(csv), "--gt",
              str(root / "test" / "outputs_json"), "--out", str(out), "--no-progress"], out / "study.log", env)
    return json.loads(evaluation.read_text())


def _scores(evaluation: dict, run: Path) -> dict[str, float]:
    """Test Dice (overall, fingertips, carpals) and the run's training seconds per optimizer step (validations
    included; comparable across variants only in a study run with --jobs 1)."""
    per_class = evaluation["per_class"]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    steps, seconds = summary.get("steps"), summary.get("train_seconds")
    return {"mean": evaluation["mean_dice"],
            "fingertips": statistics.fmean(per_class[c] for c in FINGERTIPS),
            "carpals": evaluation["groups"]["carpal"],
            "seconds_per_step": seconds / steps if steps and seconds else None,
            "per_class": dict(per_class)}


def _job(args, variant: str, seed: int, threads: int) -> list[tuple[str, int, dict]]:
    env = _env(threads)
    run = Path(args.out) / variant / f"seed{seed}"
    if variant == "folds":
        _train(args, run, [], seed, env, folds=True)
        return [("fold0", seed, _scores(_score(args, run / "fold0" / "best", run / "eval_fold0", env), run / "fold0")),
                (f"folds (ensemble of {FOLDS}, OOF thresholds)", seed,
                 _scores(_score(args, run, run / "eval_ensemble", env), run))]
    _train(args, run, VARIANTS[variant], seed, env)
    return [(variant, seed, _scores(_score(args, run / "best", run / "eval", env), run))]


def _summary(rows: list[tuple[str, int, dict]]) -> dict:
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r[2] for r in rows if r[0] == name]
        out[name] = {"seeds": len(mine)}
        seconds = [m["seconds_per_step"] for m in mine if m.get("seconds_per_step")]
        out[name]["seconds_per_step"] = statistics.median(seconds) if seconds else None
        out[name]["per_class"] = {c: statistics.fmean(m["per_class"][c] for m in mine) for c in mine[0]["per_class"]}
        for key in ("mean", "fingertips", "carpals"):
            values = [m[key] for m in mine]
            out[name][key] = {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) / 2,
                              "values": values, "seeds": [r[1] for r in rows if r[0] == name]}
    return out


def _table(summary: dict, baseline: str = "whole256") -> str:
    """Mean ± spread per variant; against the baseline, the difference of means (judged against the two spreads)
    and the paired per-seed comparison (same seeds: same split, sample order and shared initial weights)."""
    lines = ["| variant | seeds | test mean Dice | fingertips (1, 4, 8, 12, 16) | carpals | mean vs baseline | "
             "paired diff, 95 % CI (t), MDE | s / step |", "|---|---:|---:|---:|---:|---|---|---:|"]
    base = summary.get(baseline, {}).get("mean")
    reference = ("whole256", base)
    for name, s in summary.items():
        cells = [f"{s[k]['mean']:.4f} ± {s[k]['spread']:.4f}" for k in ("mean", "fingertips", "carpals")]
        verdict = paired = ""
        ref_name, ref = ("fold0", summary["fold0"]["mean"]) if name.startswith("folds") and "fold0" in summary \
            else reference
        if ref and name != ref_name:
            diff = s["mean"]["mean"] - ref["mean"]
            within = abs(diff) <= s["mean"]["spread"] + ref["spread"]
            verdict = f"{diff:+.4f} vs {ref_name}" + (" (within spread)" if within else "")
            p = compare_paired(dict(zip(s["mean"]["seeds"], s["mean"]["values"])),
                               dict(zip(ref["seeds"], ref["values"])))
            if p.n >= 2:  # the t interval: with 2 seeds a bootstrap interval is too narrow to be read alone
                paired = f"{p.mean_diff:+.4f}, [{p.t_low:+.4f}, {p.t_high:+.4f}], {p.mde:.3f}"
        pace = f"{s['seconds_per_step']:.2f}" if s.get("seconds_per_step") else "–"
        lines.append(f"| {name} | {s['seeds']} | " + " | ".join(cells) + f" | {verdict} | {paired} | {pace} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    rows: list[tuple[str, int, dict]] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(lambda job: _job(args, *job, threads), jobs):
            rows += result
    summary = _summary(rows)
    doc = {"steps": args.steps, "seeds": args.seeds, "root": args.root, "config": args.config, "variants": summary,
           "spread": "half the range over seeds"}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "study.json").write_text(json.dumps(doc, indent=2))
    (Path(args.out) / "study.md").write_text(_table(summary) + "\n")
    print(json.dumps(doc, indent=2))
    print(_table(summary))
    return doc


if __name__ == "__main__":
    main()
