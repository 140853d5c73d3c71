"""Does a set of post-processing rules pay on test? Trained runs re-tuned on validation, paired on the same weights.

Each run's ``best`` model goes through ``mmseg-tune`` with ``--rules`` (thresholds and one rule per class chosen
again on the run's validation split), then through ``mmseg-predict`` and ``mmseg-evaluate`` on the test split; its
test Dice is compared with the run's own evaluation (``RUN/eval/evaluation.json``, as ``recipe_study.py`` writes
it, made with the rules the run was trained with). The weights are the same, so the per-seed difference is the
rules' alone. JSON and a markdown table (overall, the classes below --floor in either, per seed) on stdout.

    .venv/bin/python benchmarks/rule_study.py --root data/synthetic --runs runs/demo500/whole256/seed* \
        --out runs/rules_exclusive --tta
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from mmseg_text.studies.paired_stats import compare_paired
from mmseg_text.thresholds import TUNED_RULES

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/synthetic")
    p.add_argument("--runs", nargs="+", required=True, help="run folders (RUN/best, RUN/eval/evaluation.json)")
    p.add_argument("--out", default="runs/rule_study")
    p.add_argument("--rules", nargs="*", default=list(TUNED_RULES))
    p.add_argument("--tta", action="store_true", help="predict with flip TTA (as the runs' own evaluation did)")
    p.add_argument("--floor", type=float, default=0.80, help="list the classes below this mean Dice")
    return p.parse_args(argv)


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        if subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO):
            raise RuntimeError(f"{' '.join(cmd[:4])} ... failed; see {log}")


def _evaluate(args, run: Path, out: Path) -> dict:
    """The re-tuned model's test evaluation (reused when it exists, so an interrupted study resumes)."""
    evaluation = out / "eval" / "evaluation.json"
    if not evaluation.exists():
        root, log = Path(args.root), out / "study.log"
        if not (out / "best" / "thresholds.json").exists():
            _run([sys.executable, "-m", "mmseg_text.cli.tune", "--checkpoint", str(run / "best"), "--out",
                  str(out / "best"), "--rules", *args.rules, "--data-root", str(root), "--no-progress"], log)
        csv = out / "eval" / "submission.csv"
        _run([sys.executable, "-m", "mmseg_text.cli.predict", "--checkpoint", str(out / "best"), "--images",
              str(root / "test" / "DCM"), "--with-meta", "--meta", str(root / "meta_data.xlsx"),
              *([] if args.tta else ["--no-tta"]), "--device", "cpu", "--out", str(csv)], log)
        _run([sys.executable, "-m", "mmseg_text.cli.evaluate", "--pred", str(csv), "--gt",
              str(root / "test" / "outputs_json"), "--out", str(out / "eval"), "--no-progress"], log)
    return json.loads(evaluation.read_text())


def main(argv=None) -> dict:
    args = parse_args(argv)
    rows = []
    for i, run in enumerate(Path(r) for r in args.runs):
        before = json.loads((run / "eval" / "evaluation.json").read_text())
        after = _evaluate(args, run, Path(args.out) / run.name)
        rules = json.loads((Path(args.out) / run.name / "best" / "thresholds.json").read_text())["postprocess"]
        rows.append({"run": str(run), "seed": i, "before": before, "after": after, "rules": rules})
    names = list(rows[0]["before"]["per_class"])
    per_class = {side: {c: statistics.fmean(r[side]["per_class"][c] for r in rows) for c in names}
                 for side in ("before", "after")}
    paired = compare_paired({r["seed"]: r["after"]["mean_dice"] for r in rows},
                            {r["seed"]: r["before"]["mean_dice"] for r in rows})
    low = [c for c in names if min(per_class["before"][c], per_class["after"][c]) < args.floor]
    doc = {"root": args.root, "rules": args.rules, "runs": [r["run"] for r in rows],
           "mean_dice": {side: [r[side]["mean_dice"] for r in rows] for side in ("before", "after")},
           "paired": paired.to_dict(),
           "per_class_mean": per_class,
           "chosen": {r["run"]: {c: rule for c, rule in zip(names, r["rules"]) if rule != "none"} for r in rows}}
    lines = ["| | " + " | ".join(Path(r["run"]).name for r in rows) + " | mean ± SD |",
             "|---|" + "---:|" * (len(rows) + 1)]
    for side in ("before", "after"):
        values = doc["mean_dice"][side]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| test mean Dice, {side} | " + " | ".join(f"{v:.4f}" for v in values)
                     + f" | {statistics.fmean(values):.4f} ± {sd:.4f} |")
    for c in low:
        for side in ("before", "after"):
            values = [r[side]["per_class"][c] for r in rows]
            lines.append(f"| {c}, {side} | " + " | ".join(f"{v:.3f}" for v in values)
                         + f" | {statistics.fmean(values):.3f} |")
    table = "\n".join(lines) + (f"\n\npaired after - before: {paired.mean_diff:+.4f}, t 95 % "
                                f"[{paired.t_low:+.4f}, {paired.t_high:+.4f}], MDE {paired.mde:.3f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "study.json").write_text(json.dumps(doc, indent=2, default=float))
    (Path(args.out) / "study.md").write_text(table + "\n")
    print(json.dumps(doc, indent=2, default=float))
    print(table)
    return doc


if __name__ == "__main__":
    main()
