"""The synthetic generator writes the real layout and schema, every bone, the real overlaps, the
bent-wrist shift, the quirky spreadsheet, and the same bytes for the same seed."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mmseg_text.cli import make_synthetic
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.synthetic import (BENT_RANGE_DEG, STRAIGHT_LIMIT_DEG, TRUTH_FILE, generate_dataset,
                                       plan_dataset, render_image, truth_frame)

SIZE = 256  # tiny_root's image size (tests/conftest.py)
IMAGE_NAME = re.compile(r"^image\d{13}(_[RL])?\.png$")
JSON_KEYS = ["annotations", "attributes", "file_id", "filename", "parent_path", "last_modifier_id",
             "metadata", "last_workers"]
ANNOTATION_KEYS = ["id", "type", "attributes", "points", "label"]
OVERLAPPING_PAIRS = [("Trapezium", "Trapezoid"), ("Triquetrum", "Pisiform")]


def _json_files(root: Path, split: str) -> list[Path]:
    return sorted((root / split / "outputs_json").glob("ID*/*.json"))


def _masks(polygons: dict[str, np.ndarray], names, size: int) -> np.ndarray:
    masks = np.zeros((len(names), size, size), np.uint8)
    for k, name in enumerate(names):
        cv2.fillPoly(masks[k], [np.asarray(polygons[name], np.int32)], 1)
    return masks.astype(bool)


def _centroid_x(polygon: np.ndarray) -> float:
    return float(np.asarray(polygon, float)[:, 0].mean())


def test_layout_follows_the_real_dataset(tiny_root):
    truth = pd.read_csv(tiny_root / TRUTH_FILE)
    for split in ("train", "test"):
        person_dirs = sorted((tiny_root / split / "DCM").iterdir())
        assert all(re.fullmatch(r"ID\d{3}", d.name) for d in person_dirs)
        ids = {int(d.name[2:]) for d in person_dirs}
        assert ids == set(truth.loc[truth["split"] == split, "person_id"])
        for person_dir in person_dirs:
            pngs = sorted(person_dir.iterdir())
            assert len(pngs) == 2 and all(IMAGE_NAME.match(p.name) for p in pngs)
            for png in pngs:
                assert (tiny_root / split / "outputs_json" / person_dir.name / f"{png.stem}.json").is_file()
    train_ids = set(truth.loc[truth["split"] == "train", "person_id"])
    test_ids = set(truth.loc[truth["split"] == "test", "person_id"])
    assert train_ids | test_ids == set(range(1, 7)) and not train_ids & test_ids
    assert len(test_ids) == 2  # round(0.27 * 6)
    assert sorted(truth.groupby("person_id")["side"].apply(lambda s: tuple(sorted(s))).unique()) == [("left", "right")]


def test_png_is_single_channel_8_bit_at_the_requested_size(tiny_root):
    png = next((tiny_root / "train" / "DCM").glob("ID*/*.png"))
    image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE)
    assert image.std() > 10  # a picture, not a blank


def test_json_schema_matches_reference(tiny_root):
    for split in ("train", "test"):
        for path in _json_files(tiny_root, split):
            doc = json.loads(path.read_text(encoding="utf-8"))
            assert list(doc) == JSON_KEYS
            assert doc["filename"] == f"{path.stem}.jpg"  # the real files' wrong extension
            assert doc["metadata"] == {"height": 3060, "width": 3060}  # and wrong size
            assert doc["parent_path"].startswith("/X-ray_UNIST/2022") and doc["parent_path"].endswith(path.parent.name)
            assert doc["attributes"] == {} and doc["last_workers"] == {}
            for entry in doc["annotations"]:
                assert list(entry) == ANNOTATION_KEYS and entry["type"] == "poly_seg"
                assert re.fullmatch(r"\d+-[0-9a-f-]{36}", entry["id"])
                points = np.asarray(entry["points"])
                assert points.dtype.kind == "i" and points.min() >= 0 and points.max() <= SIZE - 1


def test_every_image_has_all_bones_and_the_real_overlaps(tiny_root, catalogue):
    for split in ("train", "test"):
        for path in _json_files(tiny_root, split):
            polygons = load_annotation(path, known_labels=catalogue.names, image_size=(SIZE, SIZE))
            assert sorted(polygons) == sorted(catalogue.names)
            masks = _masks(polygons, catalogue.names, SIZE)
            assert masks.shape == (29, SIZE, SIZE)
            assert masks.reshape(29, -1).sum(1).min() >= 10
            for a, b in OVERLAPPING_PAIRS:
                overlap = masks[catalogue.index(a)] & masks[catalogue.index(b)]
                assert overlap.sum() >= 3, f"{path.name}: {a} and {b} do not overlap"


def test_right_hand_shows_thumb_and_radius_on_the_image_left(tiny_root, catalogue):
    truth = pd.read_csv(tiny_root / TRUTH_FILE).set_index("image_id")
    for split in ("train", "test"):
        for path in _json_files(tiny_root, split):
            polygons = load_annotation(path)
            radius_left = _centroid_x(polygons["Radius"]) < _centroid_x(polygons["Ulna"])
            thumb_left = _centroid_x(polygons["finger-1"]) < _centroid_x(polygons["finger-16"])
            right = truth.loc[path.stem, "side"] == "right"
            assert radius_left == right
            if not truth.loc[path.stem, "bent_wrist"]:
                assert thumb_left == right


def test_same_seed_same_bytes_in_parallel_or_not(tmp_path):
    serial = generate_dataset(tmp_path / "a", ids=2, size=128, seed=5, workers=1, progress=False)
    generate_dataset(tmp_path / "b", ids=2, size=128, seed=5, workers=2, progress=False)
    generate_dataset(tmp_path / "c", ids=2, size=128, seed=6, workers=1, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.suffix in (".png", ".json"))
    assert len(files) == 4 + 4 + 1 and serial["written"] == 4  # PNGs, JSONs, synthetic_card.json
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    other = sorted((tmp_path / "c").rglob("*.png"))
    assert other and all(p.name not in {f.name for f in files} for p in other)


def test_skip_existing_keeps_files(tmp_path):
    generate_dataset(tmp_path, ids=1, size=128, seed=0, progress=False)
    again = generate_dataset(tmp_path, ids=1, size=128, seed=0, progress=False, skip_existing=True)
    assert again["written"] == 0 and again["skipped"] == 2


def test_bent_wrists_are_far_more_common_in_test():
    plan = plan_dataset(400, seed=0)
    truth = truth_frame(plan)
    share = truth.groupby("split")["bent_wrist"].mean()
    assert share["train"] == pytest.approx(0.11, abs=0.01)
    assert share["test"] == pytest.approx(0.55, abs=0.01)
    assert truth["person_id"][truth["split"] == "test"].nunique() / 400 == pytest.approx(0.27, abs=0.01)
    bent = truth.loc[truth["bent_wrist"], "wrist_angle_deg"].abs()
    straight = truth.loc[~truth["bent_wrist"], "wrist_angle_deg"].abs()
    assert bent.between(*BENT_RANGE_DEG).all() and straight.max() <= STRAIGHT_LIMIT_DEG
    assert (truth.loc[truth["bent_wrist"], "wrist_angle_deg"] > 0).mean() > 0.6  # mostly ulnar deviation


def test_metadata_spreadsheet_has_korean_headers_and_quirks(tiny_root):
    meta = pd.read_excel(tiny_root / "meta_data.xlsx")
    assert list(meta.columns) == ["ID", "나이", "성별", "체중(몸무게)", "키(신장)", "Unnamed: 5"]
    assert set(range(1, 7)) < set(meta["ID"])  # plus metadata-only people
    sex = meta["성별"].astype(str)
    assert sex.str.startswith("_x0008_").any() and sex.str.startswith(" ").any()
    assert set(sex.str.replace("_x0008_", "").str.strip()) <= {"남", "여"}
    assert meta["나이"].between(19, 69).all() and meta["키(신장)"].between(150, 187).all()
    assert meta["체중(몸무게)"].between(42, 118).all()
    remarks = meta["Unnamed: 5"].dropna()
    assert len(remarks) == 1 and "nail polish" in remarks.iloc[0]


def test_height_and_sex_set_hand_size():
    spec = plan_dataset(3, seed=0).images[0]
    small = dataclasses.replace(spec.person, sex="female", height=150, weight=45)
    large = dataclasses.replace(spec.person, sex="male", height=187, weight=90)

    def bone_area(person) -> int:
        polygons = render_image(dataclasses.replace(spec, person=person), 256).polygons
        return sum(int(_masks({k: v}, [k], 256).sum()) for k, v in polygons.items())

    assert bone_area(large) > 1.3 * bone_area(small)


def test_make_synthetic_cli(tmp_path, capsys):
    assert make_synthetic.main(["--out", str(tmp_path), "--ids", "1", "--size", "96", "--no-progress"]) == 0
    pngs = sorted((tmp_path / "train" / "DCM" / "ID001").glob("*.png"))
    assert len(pngs) == 2
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (96, 96)
    assert all((tmp_path / "train" / "outputs_json" / "ID001" / f"{p.stem}.json").is_file() for p in pngs)
    assert (tmp_path / TRUTH_FILE).is_file() and (tmp_path / "meta_data.xlsx").is_file()
    assert "2 images written" in capsys.readouterr().out
    # same seed again with --skip-existing: nothing rewritten
    assert make_synthetic.main(["--out", str(tmp_path), "--ids", "1", "--size", "96", "--no-progress",
                                "--skip-existing"]) == 0
    assert "0 images written, 2 kept" in capsys.readouterr().out
    assert make_synthetic.main(["--out", str(tmp_path), "--ids", "0", "--no-progress"]) == 1
    assert capsys.readouterr().err.startswith("make_synthetic: ")
