"""Thresholds files are read through one checked reader, for a model directory and for a k-fold run alike."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mmseg_text.inference.model_dir import read_thresholds
from mmseg_text.inference.predictor import _run_thresholds
from mmseg_text.models.build import ModelDirError
from mmseg_text.run_layout import THRESHOLDS_FILE, facts_path

NAMES = ("a", "b")


def test_a_run_directory_thresholds_file_is_read_checked(tmp_path):
    run = tmp_path / "kfold_run"
    run.mkdir()
    default = (np.array([0.5, 0.5]), ["none", "largest"])
    thresholds, rules = _run_thresholds([run], NAMES, default)  # none there: the members'
    np.testing.assert_array_equal(thresholds, default[0])
    assert rules == ["none", "largest"]
    (run / THRESHOLDS_FILE).write_text(json.dumps({"classes": list(NAMES), "thresholds": [0.3, 0.7]}))
    thresholds, rules = _run_thresholds([run], NAMES, default)
    np.testing.assert_array_equal(thresholds, [0.3, 0.7])
    assert rules == ["none", "none"]  # a file from before post-processing: no rule
    (run / THRESHOLDS_FILE).write_text(json.dumps({"classes": list(NAMES), "thresholds": [0.3, 0.7],
                                                   "postprocess": ["largest", "none"]}))
    assert _run_thresholds([run], NAMES, default)[1] == ["largest", "none"]
    (run / THRESHOLDS_FILE).write_text('{"classes": ["a", "b"], "thresh')  # truncated by a killed write
    with pytest.raises(ModelDirError, match=rf"{THRESHOLDS_FILE}: .*damaged"):
        _run_thresholds([run], NAMES, default)


def test_thresholds_of_other_classes_or_count_are_errors_naming_the_file(tmp_path):
    path = tmp_path / THRESHOLDS_FILE
    path.write_text(json.dumps({"classes": ["a", "c"], "thresholds": [0.3, 0.7]}))
    with pytest.raises(ValueError, match=f"{path}: classes differ"):
        read_thresholds(path, NAMES)
    path.write_text(json.dumps({"thresholds": [0.3]}))
    with pytest.raises(ValueError, match=f"{path}: 1 thresholds for 2 classes"):
        read_thresholds(path, NAMES)
    path.write_text(json.dumps([0.3, 0.7]))
    with pytest.raises(ValueError, match="expected a mapping with a 'thresholds' list"):
        read_thresholds(path, NAMES)
    path.write_text(json.dumps({"thresholds": [0.3, 0.7], "postprocess": ["largest", "biggest"]}))
    with pytest.raises(ValueError, match=rf"{path}: unknown post-processing rule\(s\) \['biggest'\]"):
        read_thresholds(path, NAMES)
    path.write_text(json.dumps({"thresholds": [0.3, 0.7], "postprocess": ["largest"]}))
    with pytest.raises(ValueError, match=f"{path}: 1 post-processing rules for 2 classes"):
        read_thresholds(path, NAMES)


def test_the_facts_file_sits_beside_its_submission(tmp_path):
    assert facts_path(tmp_path / "sub.csv") == tmp_path / "sub_facts.csv"


def test_an_ensemble_applies_a_rule_only_where_members_carrying_over_half_the_weight_chose_it():
    from types import SimpleNamespace

    from mmseg_text.inference.predictor import _member_thresholds

    def member(weight, rules, thresholds):
        return SimpleNamespace(weight=weight, exported=SimpleNamespace(postprocess=rules,
                                                                       thresholds=np.asarray(thresholds, float)))

    members = [member(1.0, ["attached", "largest", "min_area:0.0005"], [0.4, 0.5, 0.6]),
               member(1.0, ["attached", "none", "largest"], [0.6, 0.5, 0.4]),
               member(2.0, ["attached", "largest", "none"], [0.5, 0.5, 0.5])]
    thresholds, rules = _member_thresholds(members)
    np.testing.assert_allclose(thresholds, [0.5, 0.5, 0.5])
    assert rules == ["attached", "largest", "none"]  # 3/4, 3/4, and no rule above one half
