"""mmseg-evaluate (scripts/evaluate.py) on a tiny ground-truth set written in the real on-disk layout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.masks import polygons_to_masks
from mmseg_text.cli.evaluate import main
from mmseg_text.rle import read_submission, rle_encode, write_submission

CATALOGUE = load_catalogue()
# (person folder, image file, (H, W)): non-square sizes catch any height/width swap.
IMAGES = [
    ("ID001", "image1661130828152_R.png", (40, 52)),
    ("ID001", "image1661130828153_L.png", (52, 40)),
    ("ID002", "image1661319116107.png", (48, 48)),
]
ABSENT = {"image1661319116107.png": ("Pisiform", "finger-19")}  # labels left out: empty GT channels


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory) -> Path:
    """ROOT/test/DCM/IDxxx/*.png + ROOT/test/outputs_json/IDxxx/*.json with a polygon per bone."""
    root = tmp_path_factory.mktemp("gt")
    rng = np.random.default_rng(0)
    for person, name, (h, w) in IMAGES:
        image_dir, json_dir = root / "test" / "DCM" / person, root / "test" / "outputs_json" / person
        image_dir.mkdir(parents=True, exist_ok=True)
        json_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image_dir / name), rng.integers(0, 255, (h, w), dtype=np.uint8))
        annotations = []
        for label in CATALOGUE.names:
            if label in ABSENT.get(name, ()):
                continue
            cx, cy = rng.uniform(4, w - 5), rng.uniform(4, h - 5)
            r = rng.uniform(2, 5, size=6)
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=6))
            points = np.stack([np.clip(cx + r * np.cos(angles), 0, w - 1),
                               np.clip(cy + r * np.sin(angles), 0, h - 1)], axis=1)
            annotations.append({"id": f"{label}-id", "type": "poly_seg", "attributes": {},
                                "points": np.round(points, 1).tolist(), "label": label})
        doc = {"annotations": annotations, "attributes": {}, "file_id": "x",
               "filename": name.replace(".png", ".jpg"), "parent_path": f"/X-ray_UNIST/20220822/{person}",
               "metadata": {"height": 3060, "width": 3060}, "last_workers": {}}
        (json_dir / name.replace(".png", ".json")).write_text(json.dumps(doc), encoding="utf-8")
    return root


def gt_masks(root: Path, person: str, name: str, size) -> np.ndarray:
    polygons = load_annotation(root / "test" / "outputs_json" / person / name.replace(".png", ".json"))
    return polygons_to_masks(polygons, CATALOGUE.names, out_size=size, src_size=size)


def gt_rows(root: Path):
    for person, name, size in IMAGES:
        masks = gt_masks(root, person, name, size)
        for class_name, mask in zip(CATALOGUE.names, masks):
            yield name, class_name, rle_encode(mask)


@pytest.fixture
def perfect_csv(gt_root, tmp_path) -> Path:
    path = tmp_path / "submission.csv"
    write_submission(path, gt_rows(gt_root))
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def rewrite(csv_path: Path, edit) -> Path:
    frame = edit(read_submission(csv_path))
    write_submission(csv_path, frame.itertuples(index=False))
    return csv_path


def test_ground_truth_submission_scores_one(gt_root, perfect_csv, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    code, out, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json", "--out", out_dir], capsys)
    assert code == 0, err
    result = json.loads((out_dir / "evaluation.json").read_text())
    assert result["num_images"] == 3
    assert result["mean_dice"] == 1.0
    assert set(result["per_class"].values()) == {1.0} and len(result["per_class"]) == 29
    assert result["groups"] == {"finger": 1.0, "carpal": 1.0, "forearm": 1.0}
    assert result["per_image"]["image1661319116107.png"]["Pisiform"] == 1.0  # empty GT, empty prediction
    assert "| Radius | forearm | 1.0000 |" in out and "**1.0000**" in out
    assert (out_dir / "evaluation.md").read_text() in out


def test_one_wrong_class_lowers_exactly_that_class(gt_root, perfect_csv, capsys):
    # Predict nothing for Radius on one image: that image's Radius Dice is 1e-4 / (S + 1e-4).
    person, name, size = IMAGES[1]
    radius_pixels = int(gt_masks(gt_root, person, name, size)[CATALOGUE.index("Radius")].sum())
    assert radius_pixels > 0

    def drop_radius(frame):
        frame.loc[(frame["image_name"] == name) & (frame["class"] == "Radius"), "rle"] = ""
        return frame

    rewrite(perfect_csv, drop_radius)
    out_dir = perfect_csv.parent / "eval"
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json",
                        "--images", gt_root / "test" / "DCM", "--out", out_dir], capsys)
    assert code == 0, err
    result = json.loads((out_dir / "evaluation.json").read_text())
    radius = (2.0 + 1e-4 / (radius_pixels + 1e-4)) / 3
    assert result["per_class"]["Radius"] == pytest.approx(radius, abs=1e-12)
    assert result["per_class"]["Ulna"] == 1.0
    assert result["groups"]["forearm"] == pytest.approx((radius + 1.0) / 2, abs=1e-12)
    assert result["groups"]["finger"] == 1.0
    assert result["mean_dice"] == pytest.approx((28 + radius) / 29, abs=1e-12)


def _single_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_missing_image_exits_nonzero_naming_it(gt_root, perfect_csv, capsys):
    rewrite(perfect_csv, lambda f: f[f["image_name"] != "image1661130828153_L.png"])
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json"], capsys)
    assert code == 1
    line = _single_error_line(err)
    assert "1 ground-truth image(s) have no rows" in line and "image1661130828153_L.png" in line


def test_image_without_ground_truth_is_named(gt_root, perfect_csv, capsys):
    with open(perfect_csv, "a", encoding="utf-8") as f:
        f.write("image9999999999999.png,finger-1,\n")
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json"], capsys)
    assert code == 1
    assert "have no ground truth: image9999999999999.png" in _single_error_line(err)


def test_malformed_rle_row_is_named(gt_root, perfect_csv, capsys):
    def corrupt(frame):
        frame.at[30, "rle"] = "5 3 7"  # data row 31 (line 32)
        return frame

    rewrite(perfect_csv, corrupt)
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json"], capsys)
    assert code == 1
    line = _single_error_line(err)
    assert "row 31 (line 32)" in line and "odd number of values" in line


def test_run_beyond_the_image_is_named(gt_root, perfect_csv, capsys):
    # Well-formed, but longer than the 52x40 image (2080 pixels): only known once the size is read.
    def corrupt(frame):
        frame.at[29 + 3, "rle"] = "2000 100"
        return frame

    rewrite(perfect_csv, corrupt)
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json"], capsys)
    assert code == 1
    line = _single_error_line(err)
    assert "row 33 (line 34) (image1661130828153_L.png, finger-4)" in line and "beyond the 52x40 image" in line


def test_unknown_class_is_named(gt_root, perfect_csv, capsys):
    def rename(frame):
        frame.at[5, "class"] = "finger-20"
        return frame

    rewrite(perfect_csv, rename)
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json"], capsys)
    assert code == 1
    line = _single_error_line(err)
    assert "row 6 (line 7) has unknown class 'finger-20'" in line


def test_missing_class_row_is_named(gt_root, perfect_csv, capsys):
    rewrite(perfect_csv, lambda f: f[~((f["image_name"] == "image1661319116107.png") & (f["class"] == "Lunate"))])
    code, _, err = run(["--pred", perfect_csv, "--gt", gt_root / "test" / "outputs_json"], capsys)
    assert code == 1
    assert "image image1661319116107.png has no row for class(es) Lunate" in _single_error_line(err)


@pytest.mark.slow
def test_script_runs_as_a_program(gt_root, perfect_csv, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "evaluate.py"), "--pred", str(perfect_csv),
         "--gt", str(gt_root / "test" / "outputs_json"), "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["mean_dice"] == 1.0
    missing = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "evaluate.py"), "--pred", str(tmp_path / "none.csv"),
         "--gt", str(gt_root / "test" / "outputs_json")],
        capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: submission not found: {tmp_path / 'none.csv'}"
