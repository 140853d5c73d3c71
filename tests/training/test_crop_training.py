"""Training on crops of a larger cache: the model is built for the crop, validation tiles the whole image into
windows of it (the prediction path), and the export tells prediction to do the same."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mmseg_text.config import load_config
from mmseg_text.training import validation
from mmseg_text.inference.model_dir import load_exported
from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor
from mmseg_text.training.loop import train

from tests.runs import tiny_config_dict

pytestmark = pytest.mark.slow


def test_crop_training_validates_and_predicts_through_windows(tiny_root, tmp_path, monkeypatch):
    doc = tiny_config_dict(tiny_root, tmp_path / "run", tmp_path / "cache")
    doc["data"].update({"image_size": 64, "cache_size": 128, "crop_size": 64})
    doc["train"].update({"max_steps": 4, "checkpoint_every": 0, "eval_every": 4})
    path = tmp_path / "crops.yaml"
    path.write_text(yaml.safe_dump(doc))
    seen = []
    real = validation.model_probabilities

    def spy(model, images, context, *, window, **kwargs):
        seen.append((tuple(images.shape[-2:]), window))
        return real(model, images, context, window=window, **kwargs)

    monkeypatch.setattr(validation, "model_probabilities", spy)
    summary = train(load_config(path))
    assert seen and all(shape == (128, 128) and window == 64 for shape, window in seen)  # whole images, windows
    assert 0.0 <= summary["best_val_mean_dice"] <= 1.0 and summary["best"]["num_images"] > 0
    exported = load_exported(tmp_path / "run" / "best")
    assert (exported.preprocess.image_size, exported.preprocess.window, exported.preprocess.input_size) == (128, 64, 64)
    assert json.loads((tmp_path / "run" / "best" / "preprocessing.json").read_text())["window"] == 64
    assert exported.model.encoder.image_size == 64

    predictor = Predictor([tmp_path / "run" / "best"], PredictOptions(device="cpu"))
    assert predictor.preprocess.image_size == 128 and predictor.members[0].window == 64
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))[:1]
    pixels = ImageFiles(files, predictor.preprocess)[0]["pixels"][None]
    probs = predictor.probabilities(pixels, ["unknown"], [{}])
    assert probs.shape[-2:] == (128, 128) and np.isfinite(probs.numpy()).all()
