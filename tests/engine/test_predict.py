"""Prediction to CSV, its RLE round trip, evaluation, and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmseg_text.config import load_config
from mmseg_text.cli import predict as predict_cli
from mmseg_text.cli import train as train_cli
from mmseg_text.cli.evaluate import main as evaluate_main
from mmseg_text.engine.prediction import ImageFiles, PredictOptions, Predictor
from mmseg_text.engine.train import train
from mmseg_text.data.images import read_image
from mmseg_text.rle import read_submission, rle_decode

from .conftest import tiny_config_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_root, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("predict")
    doc = tiny_config_dict(tiny_root, base / "run", base / "cache")
    doc["train"].update({"max_steps": 4, "checkpoint_every": 0, "eval_every": 4})
    cfg_path = base / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    train(load_config(cfg_path))
    return base / "run" / "best"


def test_predict_writes_29_rows_per_image_that_decode_to_the_thresholded_masks(checkpoint, tiny_root, tmp_path):
    out = tmp_path / "submission.csv"
    images = tiny_root / "test" / "DCM"
    code = predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(images), "--with-meta",
                             "--meta", str(tiny_root / "meta_data.xlsx"), "--out", str(out),
                             "--save-overlays", str(tmp_path / "overlays")])
    assert code == 0
    frame = read_submission(out)
    files = sorted(images.rglob("*.png"))
    from mmseg_text.engine.export import load_exported

    names = list(load_exported(checkpoint).catalogue.names)
    assert len(frame) == 29 * len(files)
    for _, rows in frame.groupby("image_name", sort=False):
        assert list(rows["class"]) == names  # class order inside each image
    assert len(list((tmp_path / "overlays").glob("*.png"))) == len(files)

    # Decoding the CSV gives exactly the masks the predictor thresholded (same captions: with meta).
    predictor = Predictor([checkpoint], PredictOptions(with_meta=True, meta_file=str(tiny_root / "meta_data.xlsx")))
    path = files[0]
    image = read_image(path)
    batch = ImageFiles([path], predictor.preprocess)[0]["image"][None]
    metas = [predictor.person_facts(path)]
    facts = predictor.image_facts(batch, metas)
    metas = [{**metas[0], "wrist_angle_deg": facts[0]["wrist_angle_deg"], "bent_wrist": facts[0]["bent_wrist"]}]
    probs = predictor.probabilities(batch, [facts[0]["side"]], metas)[0]
    masks = predictor.masks_at_original_size(probs, image.shape[:2])
    rows = frame[frame["image_name"] == path.name]
    decoded = np.stack([rle_decode(r, image.shape[:2]) for r in rows["rle"]])
    np.testing.assert_array_equal(decoded, masks)

    # The CSV scores through evaluate.py against the test ground truth.
    assert evaluate_main(["--pred", str(out), "--gt", str(tiny_root / "test" / "outputs_json"),
                          "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert 0.0 <= result["mean_dice"] <= 1.0 and result["num_images"] == len(files)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_config_key_is_one_line(tiny_config, capsys):
    assert train_cli.main(["--config", str(tiny_config), "train.lrr=0.1"]) == 1
    assert "unknown config key 'train.lrr'" in _one_error_line(capsys)


def test_checkpoint_without_weights_is_one_line(tmp_path, tiny_root, capsys):
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    code = predict_cli.main(["--checkpoint", str(empty), "--images", str(tiny_root / "test" / "DCM"),
                             "--out", str(tmp_path / "s.csv")])
    assert code == 1
    line = _one_error_line(capsys)
    assert "model.safetensors" in line and str(empty) in line
    assert not (tmp_path / "s.csv").exists()


def test_images_path_without_images_is_one_line(checkpoint, tmp_path, capsys):
    nothing = tmp_path / "no_images"
    nothing.mkdir()
    (nothing / "notes.txt").write_text("not an image")
    assert predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(nothing), "--out", str(tmp_path / "s.csv")]) == 1
    assert "no images" in _one_error_line(capsys)


def test_metadata_without_needed_columns_is_one_line(checkpoint, tiny_root, tmp_path, capsys):
    bad = tmp_path / "meta.csv"
    pd.DataFrame({"ID": [1, 2], "age": [30, 40]}).to_csv(bad, index=False)
    code = predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(tiny_root / "test" / "DCM"),
                             "--with-meta", "--meta", str(bad), "--out", str(tmp_path / "s.csv")])
    assert code == 1
    line = _one_error_line(capsys)
    assert str(bad) in line and "sex" in line
