"""k-fold runner: every fold trained and exported, out-of-fold thresholds, resume fold by fold, and the run
directory predicted as one ensemble with those thresholds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mmseg_text.choices import POSTPROCESS_RULES
from mmseg_text.cli import predict as predict_cli
from mmseg_text.cli import train as train_cli
from mmseg_text.run_layout import RunLayout
from mmseg_text.thresholds import SweepCounts, load_sweep
from mmseg_text.training import kfold
from mmseg_text.inference.predictor import PredictOptions, Predictor
from mmseg_text.rle import read_submission

from tests.runs import tiny_config_dict

pytestmark = pytest.mark.slow


def test_all_folds_oof_thresholds_resume_and_ensemble_prediction(tiny_root, tmp_path, monkeypatch):
    doc = tiny_config_dict(tiny_root, tmp_path / "run", tmp_path / "cache")
    doc["train"].update({"max_steps": 2, "eval_every": 2, "checkpoint_every": 0, "tune_postprocess": True})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(doc))
    assert train_cli.main(["--config", str(config), "--folds", "all"]) == 0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("fold*")) == ["fold0", "fold1"]
    counts = [load_sweep(RunLayout(run).fold(k).oof_counts) for k in range(2)]
    val_images = [json.loads((run / f"fold{k}" / "summary.json").read_text())["last"]["num_images"] for k in range(2)]
    assert [len(c) for c in counts] == val_images and sum(val_images) == 8  # every training image once, out of fold
    doc = json.loads((run / "thresholds.json").read_text())
    assert len(doc["thresholds"]) == 29 and doc["out_of_fold_images"] == 8
    assert doc["out_of_fold_mean_dice"] >= doc["out_of_fold_mean_dice_at_0.5"] - 1e-12  # tuning never loses
    # the connected-component rule chosen per class on the out-of-fold counts: a rule exactly where it won there
    assert all(c.has_components for c in counts)
    pooled = SweepCounts.concat(counts)
    plain = pooled.mean_dice().max(axis=1)
    assert doc["out_of_fold_mean_dice_thresholds_only"] == pytest.approx(plain.mean())
    assert doc["out_of_fold_mean_dice"] >= doc["out_of_fold_mean_dice_thresholds_only"] - 1e-12
    best, expected = plain.copy(), ["none"] * len(plain)
    for rule in sorted(pooled.rules, key=POSTPROCESS_RULES.index):  # ties go to the rule listed first
        curve = pooled.mean_dice(rule=rule).max(axis=1)
        for k in np.flatnonzero(curve > best):
            best[k], expected[k] = curve[k], rule
    assert doc["postprocess"] == expected

    monkeypatch.setattr("mmseg_text.training.kfold.train", lambda *a, **k: pytest.fail("a finished fold was trained again"))
    assert train_cli.main(["--config", str(config), "--folds", "0,1"]) == 0  # resume: nothing to do

    predictor = Predictor([run], PredictOptions())
    assert len(predictor.members) == 2
    np.testing.assert_allclose(predictor.thresholds, doc["thresholds"])  # the run's OOF thresholds, not the mean
    assert predictor.postprocess == doc["postprocess"]
    out = tmp_path / "ensemble.csv"
    assert predict_cli.main(["--checkpoint", str(run), "--images", str(tiny_root / "test" / "DCM"), "--out", str(out)]) == 0
    assert len(read_submission(out)) == 29 * 4
