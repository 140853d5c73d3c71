"""Held-out test scores for a study's runs, through the prediction path a user runs.

Validation has a handful of images (one bent wrist in the demo data); the test split, where it is labelled,
has the real shift (≈ 55 % bent wrists). Each run's exported ``best/`` model predicts the test images with
``mmseg-predict --with-meta``: the side and wrist angle in its captions come from its own first pass, as they
would at inference. It is scored at original resolution by ``evaluate_submission``.

The bent / straight subgroups are fixed by the test annotations' own geometry (``derive_metadata``), so every
variant is scored on the same images and the differences stay paired; how often each run's first pass agreed
with that geometry is recorded beside its scores.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mmseg_text.catalogue import load_catalogue
from mmseg_text.config import load_config
from mmseg_text.data.index import derived_by_image, load_derived_csv
from mmseg_text.data.layout import find_images
from mmseg_text.data.metadata import find_metadata_file
from mmseg_text.data.wrist import derive_metadata
from mmseg_text.io import atomic_write_text
from mmseg_text.run_layout import EVALUATION_FILE, RunLayout, facts_path

def labelled_test_split(root: str | Path) -> bool:
    """True when ROOT/test has images and annotation JSONs (the synthetic data; not a competition's test set)."""
    root = Path(root)
    return (root / "test" / "DCM").is_dir() and any((root / "test" / "outputs_json").glob("**/*.json"))


def subgroup_facts(root: str | Path, classes: Optional[str], out_csv: Path) -> Path:
    """Side, wrist angle and bent flag of every test image from its annotations (written once, reused)."""
    if not out_csv.exists():
        catalogue = load_catalogue(classes)
        if catalogue.hand_geometry is None:
            raise ValueError(f"{catalogue.source} declares no derived.hand_geometry: no bent-wrist subgroups")
        frame = derive_metadata(find_images(root, "test"), catalogue.hand_geometry)
        atomic_write_text(out_csv, frame.to_csv(index=False))
    return out_csv


def score_run(run_dir: str | Path, facts_csv: Path) -> dict[str, Any]:
    """Predict ROOT/test with ``run_dir/best`` and score it; cached in ``run_dir/test/evaluation.json``.

    Prediction runs in this process through the library (no Accelerate state is involved), as
    ``mmseg-predict --with-meta`` would run it."""
    from mmseg_text.evaluation.scoring import evaluate_submission, write_evaluation
    from mmseg_text.inference.predictor import PredictOptions, predict

    run_dir = Path(run_dir)
    out = run_dir / "test"
    cached = out / EVALUATION_FILE
    if cached.exists():
        return json.loads(cached.read_text())
    cfg = load_config(str(RunLayout(run_dir).config))
    root = Path(cfg.data.root)
    csv = out / "submission.csv"
    meta = find_metadata_file(root, cfg.data.meta_file)
    options = PredictOptions(with_meta=meta is not None, meta_file=str(meta) if meta is not None else None)
    print(f"[held-out] predict {RunLayout(run_dir).best} on {root / 'test' / 'DCM'} -> {csv}", flush=True)
    predict(RunLayout(run_dir).best, root / "test" / "DCM", csv, options)
    result = evaluate_submission(csv, root / "test" / "outputs_json", classes=cfg.data.classes, facts=facts_csv)
    result["first_pass_bent_agreement"] = _bent_agreement(facts_path(csv), facts_csv)
    result.pop("per_image", None)  # kept small: the per-image rows are in submission.csv
    write_evaluation(result, out)  # evaluation.json last: its presence marks the run as scored
    return result


def _bent_agreement(first_pass: Path, truth: Path) -> Optional[float]:
    """Share of test images whose first-pass bent_wrist equals the annotations' (None without a facts file)."""
    if not first_pass.exists():
        return None
    guessed = derived_by_image(load_derived_csv(first_pass))
    known = derived_by_image(load_derived_csv(truth))
    pairs = [(guessed[k].get("bent_wrist"), v.get("bent_wrist")) for k, v in known.items() if k in guessed]
    return sum(g is t for g, t in pairs) / len(pairs) if pairs else None


def held_out_scores(result: dict[str, Any]) -> dict[str, float]:
    """``test mean``, ``test <group>`` per catalogue group and ``test <label>`` per fact subgroup of one
    evaluation (subgroups without images left out)."""
    scores = {"test mean": result["mean_dice"]}
    scores.update({f"test {group}": value for group, value in result.get("groups", {}).items()})
    subgroups = result.get("subgroups", {})
    scores.update({f"test {label}": value for label, value in subgroups.items()
                   if label != "facts" and not label.startswith("num_") and value is not None})
    return scores
