"""The study's held-out test scores: prediction path, fixed bent/straight subgroups, cached, paired across variants."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmseg_text.studies import held_out
from mmseg_text.studies.ablation import VARIANTS, Variant, run_ablation
from mmseg_text.studies.held_out import held_out_scores, score_run, subgroup_facts

from tests.runs import tiny_config_dict, train_tiny_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory) -> tuple[Path, Path]:
    """(config path, run dir) of a 4-step tiny run with its best/ export."""
    base = tmp_path_factory.mktemp("held_out")
    return train_tiny_run(tiny_root, base), base / "run"


def test_test_facts_are_the_annotations_bent_wrists(tiny_root, tmp_path):
    facts = pd.read_csv(subgroup_facts(tiny_root, None, tmp_path / "facts.csv"))
    truth = pd.read_csv(tiny_root / "synthetic_truth.csv")
    truth = truth[truth["split"] == "test"].set_index("image_id")
    assert sorted(facts["image_id"]) == sorted(truth.index)
    assert 0 < facts["bent_wrist"].sum() < len(facts)  # both subgroups exist in the tiny test split
    assert dict(zip(facts["image_id"], facts["bent_wrist"])) == truth["bent_wrist"].to_dict()


def test_score_run_predicts_the_test_split_and_caches_its_evaluation(trained, tiny_root, tmp_path, monkeypatch):
    _, run = trained
    run_copy = tmp_path / "run"
    shutil.copytree(run, run_copy)
    facts = subgroup_facts(tiny_root, None, tmp_path / "facts.csv")
    result = score_run(run_copy, facts)
    n_test = len(list((tiny_root / "test" / "DCM").rglob("*.png")))
    n_bent = int(pd.read_csv(facts)["bent_wrist"].sum())
    assert result["num_images"] == n_test
    assert result["subgroups"]["num_bent"] == n_bent and result["subgroups"]["num_straight"] == n_test - n_bent
    # a 4-step model finds no hand in its first pass, so the captions said "unknown" and no facts file was written
    first_pass = run_copy / "test" / "submission_facts.csv"
    assert (result["first_pass_bent_agreement"] is None) == (not first_pass.exists())
    scores = held_out_scores(result)
    assert scores["test mean"] == result["mean_dice"] and scores["test bent"] == result["subgroups"]["bent"]
    assert set(scores) == {"test mean", "test finger", "test carpal", "test forearm", "test bent", "test straight"}

    def no_second_prediction(*args, **kwargs):
        raise AssertionError("a scored run must not be predicted again")

    import mmseg_text.inference.predictor as predictor

    monkeypatch.setattr(predictor, "predict", no_second_prediction)
    assert score_run(run_copy, facts)["mean_dice"] == result["mean_dice"]


def test_first_pass_agreement_counts_images_whose_bent_flag_matches(tmp_path):
    truth = tmp_path / "truth.csv"
    guess = tmp_path / "guess.csv"
    pd.DataFrame({"image_id": ["a", "b", "c", "d"], "side": "right", "wrist_angle_deg": [50.0, 2.0, 45.0, 1.0],
                  "bent_wrist": [True, False, True, False]}).to_csv(truth, index=False)
    pd.DataFrame({"image_id": ["a", "b", "c", "e"], "side": "right", "wrist_angle_deg": [48.0, 40.0, 44.0, 3.0],
                  "bent_wrist": [True, True, True, False]}).to_csv(guess, index=False)
    assert held_out._bent_agreement(guess, truth) == pytest.approx(2 / 3)  # a, c agree; b differs; d, e unmatched
    assert held_out._bent_agreement(tmp_path / "missing.csv", truth) is None


def test_ablation_test_scores_are_paired_across_variants(trained, tmp_path):
    # Two variants holding the same trained model: every paired test difference is exactly 0.
    cfg_path, run = trained
    variants = [VARIANTS[0], Variant("meta", ("text.mode=meta",))]
    for variant in variants:
        shutil.copytree(run, tmp_path / variant.name / "seed0")
    summary = json.loads((run / "summary.json").read_text())
    result = run_ablation(str(cfg_path), tmp_path, seeds=1, variants=variants, launcher=["false"], test=True)
    none, meta = result["variants"]["none"], result["variants"]["meta"]
    assert none["mean"]["values"] == [summary["last"]["mean_dice"]]  # validation columns unchanged
    assert none["test mean"]["values"] == meta["test mean"]["values"]
    paired = result["test"]["test mean"]["vs_baseline"]["meta"]["paired"]
    assert paired["differences"] == [0.0]
    assert "test bent" in result["test"]
    text = (tmp_path / "ablation.md").read_text()
    assert "## Held-out test split" in text and "### test bent: against no text" in text
    assert (tmp_path / "test_facts.csv").exists()


def test_ablation_test_needs_a_labelled_test_split(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    shutil.rmtree(root / "test" / "outputs_json")
    doc = tiny_config_dict(root, tmp_path / "run", tmp_path / "cache")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(FileNotFoundError, match="outputs_json"):
        run_ablation(str(cfg_path), tmp_path / "ablation", seeds=1, variants=[VARIANTS[0]], launcher=["false"],
                     test=True)
    assert held_out.labelled_test_split(tiny_root) is True
