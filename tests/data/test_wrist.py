"""Wrist angle and hand side recovered from polygons agree with the generator's truth, keep their
anatomical meaning under a mirror and a rotation, and follow the sign convention of DESIGN.md."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest

from mmseg_text.catalogue import REPO_ROOT
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.layout import find_images
from mmseg_text.data.synthetic import TRUTH_FILE, generate_dataset
from mmseg_text.data.wrist import (BENT_WRIST_THRESHOLD_DEG, DERIVED_COLUMNS, WristGeometryError, derive_metadata,
                                   hand_side_from_polygons, wrist_angle_from_polygons)


@pytest.fixture(scope="module")
def truth_root(tmp_path_factory):
    """24 images (12 people, both splits, several bent wrists) at 256 px."""
    root = tmp_path_factory.mktemp("wrist_truth")
    generate_dataset(root, ids=12, size=256, seed=7, progress=False)
    return root


def _rectangle(centre, length, width, angle_deg):
    """Corners of a rectangle whose long side points up the image (y down), turned clockwise by angle."""
    a = math.radians(angle_deg)
    along = np.array([math.sin(a), -math.cos(a)])
    across = np.array([math.cos(a), math.sin(a)])
    c = np.asarray(centre, float)
    return np.array([c + sa * length / 2 * along + sb * width / 2 * across
                     for sa, sb in ((-1, -1), (-1, 1), (1, 1), (1, -1))])


def _schematic_right_hand(deviation_deg):
    """Vertical forearm, radius left of the ulna (a right hand), middle metacarpal turned clockwise:
    toward the ulna on the image's right, i.e. ulnar deviation for positive angles."""
    pivot = np.array([100.0, 140.0])
    a = math.radians(deviation_deg)
    metacarpal_centre = pivot + 45 * np.array([math.sin(a), -math.cos(a)])
    return {
        "Radius": _rectangle((85, 200), 100, 24, 0),
        "Ulna": _rectangle((118, 205), 100, 14, 0),
        "finger-11": _rectangle(metacarpal_centre, 60, 9, deviation_deg),
    }


def test_angle_and_side_match_generator_truth(truth_root):
    truth = pd.read_csv(truth_root / TRUTH_FILE)
    derived = pd.concat([derive_metadata(truth_root, split) for split in ("train", "test")])
    assert list(derived.columns) == DERIVED_COLUMNS
    merged = truth.merge(derived, on=["image_id", "person_id"], suffixes=("_true", ""))
    assert len(merged) == len(truth) == 24
    error = (merged["wrist_angle_deg"] - merged["wrist_angle_deg_true"]).abs()
    assert error.mean() <= 5.0, f"mean absolute angle error {error.mean():.2f} deg"
    assert error.max() <= 10.0
    assert (merged["side"] == merged["side_true"]).all()
    assert merged["bent_wrist_true"].sum() >= 4
    assert (merged["bent_wrist"] == merged["bent_wrist_true"]).all()


@pytest.mark.parametrize("deviation", [-50.0, -15.0, 0.0, 10.0, 45.0])
def test_sign_convention_positive_is_ulnar(deviation):
    polygons = _schematic_right_hand(deviation)
    assert wrist_angle_from_polygons(polygons) == pytest.approx(deviation, abs=0.5)
    assert hand_side_from_polygons(polygons) == "right"


def test_mirror_flips_side_and_keeps_angle(tiny_root):
    for record in find_images(tiny_root, "train"):
        polygons = load_annotation(record.json_path)
        mirrored = {name: np.column_stack([255 - p[:, 0], p[:, 1]]) for name, p in polygons.items()}
        side = hand_side_from_polygons(polygons)
        assert hand_side_from_polygons(mirrored) == {"left": "right", "right": "left"}[side]
        assert wrist_angle_from_polygons(mirrored) == pytest.approx(wrist_angle_from_polygons(polygons), abs=1e-6)


def test_rotating_the_whole_image_changes_nothing(tiny_root):
    turn = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    for record in find_images(tiny_root, "train")[:4]:
        polygons = load_annotation(record.json_path)
        rotated = {name: (p - 128) @ turn.T + 128 for name, p in polygons.items()}
        assert hand_side_from_polygons(rotated) == hand_side_from_polygons(polygons)
        assert wrist_angle_from_polygons(rotated) == pytest.approx(wrist_angle_from_polygons(polygons), abs=1e-6)


def test_missing_bone_is_named():
    polygons = _schematic_right_hand(0.0)
    del polygons["Ulna"]
    with pytest.raises(WristGeometryError, match="Ulna"):
        wrist_angle_from_polygons(polygons)


def test_threshold_separates_straight_from_bent():
    assert 20.0 < BENT_WRIST_THRESHOLD_DEG < 40.0


def test_derive_meta_script_writes_csv(tiny_root, tmp_path):
    spec = importlib.util.spec_from_file_location("derive_meta", REPO_ROOT / "scripts" / "derive_meta.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "derived_tiny.csv"
    assert module.main([str(tiny_root), "--name", "tiny", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == DERIVED_COLUMNS and len(frame) == 8
    assert set(frame["side"]) == {"left", "right"}
    assert module.main([str(tmp_path / "missing")]) == 1
