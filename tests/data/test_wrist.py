"""Wrist angle and hand side recovered from polygons agree with the generator's truth, keep their
anatomical meaning under a mirror and a rotation, and follow the sign convention of DESIGN.md."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmseg_text.catalogue import HandGeometryBones, load_catalogue
from mmseg_text.cli import derive_meta
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.layout import find_images
from mmseg_text.data.facts import UNKNOWN_FACTS
from mmseg_text.data.masks import polygons_to_masks
from mmseg_text.data.synthetic import TRUTH_FILE, generate_dataset
from mmseg_text.data.wrist import (BENT_WRIST_THRESHOLD_DEG, DERIVED_COLUMNS, WristGeometryError,
                                   derive_metadata, hand_facts, hand_facts_from_masks, hand_side_from_polygons,
                                   wrist_angle_from_polygons)


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


def _bones(catalogue) -> HandGeometryBones:
    bones = catalogue.hand_geometry
    assert bones == HandGeometryBones(radius="Radius", ulna="Ulna", middle_metacarpal="finger-11")
    return bones


def test_angle_and_side_match_generator_truth(truth_root, catalogue):
    truth = pd.read_csv(truth_root / TRUTH_FILE)
    derived = pd.concat([derive_metadata(find_images(truth_root, split), _bones(catalogue))
                         for split in ("train", "test")])
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
def test_sign_convention_positive_is_ulnar(deviation, catalogue):
    polygons = _schematic_right_hand(deviation)
    assert wrist_angle_from_polygons(polygons, _bones(catalogue)) == pytest.approx(deviation, abs=0.5)
    assert hand_side_from_polygons(polygons, _bones(catalogue)) == "right"
    facts = hand_facts(polygons, _bones(catalogue))
    assert facts == {"side": "right", "wrist_angle_deg": pytest.approx(deviation, abs=0.5),
                     "bent_wrist": abs(deviation) >= BENT_WRIST_THRESHOLD_DEG}


def test_bones_are_found_by_the_catalogue_names_not_fixed_ones():
    """Another catalogue may call the three bones anything; only its declaration counts."""
    names = {"Radius": "R", "Ulna": "U", "finger-11": "MC3"}
    renamed = {names[k]: v for k, v in _schematic_right_hand(20.0).items()}
    bones = HandGeometryBones(radius="R", ulna="U", middle_metacarpal="MC3")
    assert wrist_angle_from_polygons(renamed, bones) == pytest.approx(20.0, abs=0.5)
    assert hand_side_from_polygons(renamed, bones) == "right"


def test_mirror_flips_side_and_keeps_angle(tiny_root, catalogue):
    bones = _bones(catalogue)
    for record in find_images(tiny_root, "train"):
        polygons = load_annotation(record.json_path)
        mirrored = {name: np.column_stack([255 - p[:, 0], p[:, 1]]) for name, p in polygons.items()}
        side = hand_side_from_polygons(polygons, bones)
        assert hand_side_from_polygons(mirrored, bones) == {"left": "right", "right": "left"}[side]
        assert wrist_angle_from_polygons(mirrored, bones) == pytest.approx(wrist_angle_from_polygons(polygons, bones),
                                                                           abs=1e-6)


def test_rotating_the_whole_image_changes_nothing(tiny_root, catalogue):
    bones = _bones(catalogue)
    turn = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    for record in find_images(tiny_root, "train")[:4]:
        polygons = load_annotation(record.json_path)
        rotated = {name: (p - 128) @ turn.T + 128 for name, p in polygons.items()}
        assert hand_side_from_polygons(rotated, bones) == hand_side_from_polygons(polygons, bones)
        assert wrist_angle_from_polygons(rotated, bones) == pytest.approx(wrist_angle_from_polygons(polygons, bones),
                                                                          abs=1e-6)


def test_missing_bone_is_named(catalogue):
    polygons = _schematic_right_hand(0.0)
    del polygons["Ulna"]
    with pytest.raises(WristGeometryError, match="Ulna"):
        wrist_angle_from_polygons(polygons, _bones(catalogue))
    with pytest.raises(WristGeometryError, match="Ulna"):
        hand_side_from_polygons(polygons, _bones(catalogue))


def test_derive_metadata_names_a_bad_file_or_skips_it(tiny_root, tmp_path, catalogue):
    records = find_images(tiny_root, "train")
    bad = tmp_path / "bad.json"
    doc = {"annotations": [a for a in json.loads(records[2].json_path.read_text())["annotations"]
                           if a["label"] != "finger-11"]}
    bad.write_text(json.dumps(doc))
    broken = list(records)
    broken[2] = dataclasses.replace(records[2], json_path=bad)
    with pytest.raises(WristGeometryError, match="bad.json.*finger-11"):
        derive_metadata(broken, _bones(catalogue))
    frame = derive_metadata(broken, _bones(catalogue), skip_bad=True)
    assert len(frame) == len(records) - 1 and records[2].image_id not in set(frame["image_id"])
    # records without an annotation are left out, not an error
    unlabelled = [dataclasses.replace(r, json_path=None) for r in records[:3]]
    assert len(derive_metadata(unlabelled + records[3:], _bones(catalogue))) == len(records) - 3


def test_threshold_separates_straight_from_bent():
    assert 20.0 < BENT_WRIST_THRESHOLD_DEG < 40.0


# ----------------------------------------------------------------------------- from masks (prediction)
def _masks_of(record, catalogue, size=256):
    polygons = load_annotation(record.json_path, known_labels=catalogue.names)
    return polygons, polygons_to_masks(polygons, catalogue.names, out_size=(size, size), src_size=(256, 256))


def test_facts_from_masks_agree_with_facts_from_polygons(tiny_root, catalogue):
    bones = _bones(catalogue)
    records = find_images(tiny_root, "train") + find_images(tiny_root, "test")
    truth = pd.read_csv(tiny_root / TRUTH_FILE).set_index("image_id")
    assert truth.loc[[r.image_id for r in records], "bent_wrist"].any()  # a bent wrist among them
    for record in records:
        polygons, masks = _masks_of(record, catalogue)
        expected = hand_facts(polygons, bones)
        got = hand_facts_from_masks(masks, catalogue)
        assert set(got) == {"side", "wrist_angle_deg", "bent_wrist"}
        assert got["side"] == expected["side"], record.image_id
        assert got["wrist_angle_deg"] == pytest.approx(expected["wrist_angle_deg"], abs=3.0), record.image_id
        assert got["bent_wrist"] == expected["bent_wrist"], record.image_id
    # masks at a model size, e.g. 128 px, still give the same side and about the same angle
    polygons, masks = _masks_of(records[1], catalogue, size=128)
    got = hand_facts_from_masks(masks, catalogue)
    assert got["side"] == hand_facts(polygons, bones)["side"]
    assert got["wrist_angle_deg"] == pytest.approx(hand_facts(polygons, bones)["wrist_angle_deg"], abs=3.0)


def test_facts_from_masks_are_unknown_without_a_bone_or_without_hand_geometry(tiny_root, tmp_path, catalogue):
    record = find_images(tiny_root, "train")[0]
    _, masks = _masks_of(record, catalogue)
    assert hand_facts_from_masks(masks, catalogue)["side"] in ("left", "right")
    for bone in ("Radius", "Ulna", "finger-11"):
        empty = masks.copy()
        empty[catalogue.index(bone)] = False
        assert hand_facts_from_masks(empty, catalogue) == UNKNOWN_FACTS
    tiny = masks.copy()  # a two-pixel speck is no outline either
    tiny[catalogue.index("Radius")] = False
    tiny[catalogue.index("Radius"), 10, 10:12] = True
    assert hand_facts_from_masks(tiny, catalogue) == UNKNOWN_FACTS
    result = hand_facts_from_masks(np.zeros_like(masks), catalogue)
    assert result == UNKNOWN_FACTS and result is not UNKNOWN_FACTS  # a copy: callers may change it
    assert UNKNOWN_FACTS == {"side": "unknown", "wrist_angle_deg": None, "bent_wrist": None}

    doc = yaml.safe_load(Path(catalogue.source).read_text(encoding="utf-8"))
    del doc["derived"]
    path = tmp_path / "no_geometry.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    plain = load_catalogue(path)
    assert plain.hand_geometry is None
    assert hand_facts_from_masks(masks, plain) == UNKNOWN_FACTS


# ----------------------------------------------------------------------------- mmseg-derive-meta
def test_derive_meta_cli_writes_csv(tiny_root, tmp_path, capsys):
    out = tmp_path / "derived_tiny.csv"
    assert derive_meta.main([str(tiny_root), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == DERIVED_COLUMNS and len(frame) == 8
    assert set(frame["side"]) == {"left", "right"}
    expected = derive_metadata(find_images(tiny_root, "train"), load_catalogue().hand_geometry)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    assert str(out) in capsys.readouterr().out

    test_out = tmp_path / "derived_test.csv"
    assert derive_meta.main([str(tiny_root), "--split", "test", "--classes", "hand_bones",
                             "--out", str(test_out)]) == 0
    truth = pd.read_csv(tiny_root / TRUTH_FILE).set_index("image_id")
    test_frame = pd.read_csv(test_out)
    assert len(test_frame) == 4
    assert (test_frame["side"].to_numpy() == truth.loc[test_frame["image_id"], "side"].to_numpy()).all()

    assert derive_meta.main([str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_derive_meta_cli_default_output_and_errors(tiny_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    assert derive_meta.main([str(root), "--split", "test"]) == 0
    assert len(pd.read_csv(root / "derived_meta_test.csv")) == 4
    # a catalogue that declares no hand geometry has nothing to derive
    doc = yaml.safe_load(Path(load_catalogue().source).read_text(encoding="utf-8"))
    del doc["derived"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    capsys.readouterr()
    assert derive_meta.main([str(root), "--classes", str(plain), "--out", str(tmp_path / "x.csv")]) == 1
    assert "hand_geometry" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    # a split without annotations: the angle needs polygons
    shutil.rmtree(root / "test" / "outputs_json")
    assert derive_meta.main([str(root), "--split", "test", "--out", str(tmp_path / "y.csv")]) == 1
    assert "outputs_json" in capsys.readouterr().err
