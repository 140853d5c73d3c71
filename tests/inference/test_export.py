"""What leaves a trained model directory: ONNX export (the graph equals PyTorch at 1e-4, at other sizes and batches,
and reads its caption inputs), hub-style save_pretrained / from_pretrained (a round trip gives the same logits; the
hub cache works offline), and temperatures fitted on validation (stored, reported, applied on request)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from mmseg_text.cli import export as export_cli
from mmseg_text.inference.model_dir import load_exported
from mmseg_text.inference.onnx_export import (CAPTION_INPUTS, OnnxGraph, caption_features, captions_path,
                                              example_inputs, export_onnx, verify_onnx)
from mmseg_text.inference.pretrained import MODEL_CARD, from_pretrained, save_pretrained

from ..runs import train_tiny_run

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    train_tiny_run(tiny_root, base)
    return base / "run" / "best"


@pytest.fixture(scope="module")
def open_gates(checkpoint, tmp_path_factory):
    """The tiny model with every text gate opened (tanh(1)), so that the caption changes the logits."""
    exported = load_exported(checkpoint)
    with torch.no_grad():
        for name, p in exported.model.named_parameters():
            if name.endswith("gate"):
                p.fill_(1.0)
    return save_pretrained(exported, tmp_path_factory.mktemp("open") / "model")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_logits_equal_pytorch_at_other_sizes_batches_and_captions(open_gates, tmp_path):
    onnx_path = export_onnx(open_gates, tmp_path / "model.onnx")
    exported = load_exported(open_gates)
    graph = OnnxGraph(exported)
    session = _session(onnx_path)
    names = [i.name for i in session.get_inputs()]
    assert names == ["image", "caption_tokens", "caption_mask"]  # cross-attention reads no pooled caption
    default = np.load(captions_path(onnx_path))
    no_meta = caption_features(exported)
    for name in CAPTION_INPUTS:
        np.testing.assert_array_equal(default[name], no_meta[name])  # the no-metadata caption, saved beside it
    inputs = example_inputs(exported, graph, batch=2, size=2 * exported.preprocess.input_size)  # 128 px, batch 2
    two = caption_features(exported, ["a left hand of a child", "a right hand of a 70 year old woman, 50 kg"])
    inputs.update(two)  # one batch, two captions of different lengths (padded, masked)
    feed = {n: inputs[n] for n in names}
    got = session.run(["logits"], feed)[0]
    with torch.no_grad():
        expected = graph(*(torch.from_numpy(inputs[n]) for n in ("image", *CAPTION_INPUTS))).numpy()
    assert got.shape == (2, 29, 128, 128)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # the same image under two captions: the caption inputs reach the network through the opened gates
    assert np.abs(got[0] - got[1]).max() > 1e-3
    report = verify_onnx(open_gates, onnx_path, size=96, repeats=1)
    assert report.ok and report.input_shape == [1, 3, 96, 96] and report.max_abs_logit_diff <= 1e-4


@pytest.fixture(scope="module")
def plain_run(tiny_root, tmp_path_factory):
    """A text-off tiny run with temperatures fitted on validation."""
    from mmseg_text.config import load_config
    from mmseg_text.training.loop import train

    from ..runs import tiny_config_dict

    base = tmp_path_factory.mktemp("plain")
    doc = tiny_config_dict(tiny_root, base / "run", base / "cache")
    doc["text"]["mode"] = "none"
    doc["train"].update({"max_steps": 2, "checkpoint_every": 0, "eval_every": 2, "fit_temperature": True})
    (base / "c.yaml").write_text(yaml.safe_dump(doc))
    train(load_config(base / "c.yaml"))
    return base / "run"


def test_a_text_off_model_exports_an_image_only_graph(plain_run, tmp_path):
    onnx_path = export_onnx(plain_run / "best", tmp_path / "plain.onnx")
    assert [i.name for i in _session(onnx_path).get_inputs()] == ["image"]
    assert not captions_path(onnx_path).exists()
    assert verify_onnx(plain_run / "best", onnx_path, repeats=1).ok


def test_fitted_temperatures_reach_the_model_directory_the_report_and_calibrated_probabilities(plain_run, tmp_path):
    from mmseg_text.calibration import TEMPERATURES, scaled_probabilities
    from mmseg_text.evaluation.report import write_report
    from mmseg_text.inference.predictor import PredictOptions, Predictor

    best = plain_run / "best"
    temps = json.loads((best / "thresholds.json").read_text())["temperatures"]
    assert len(temps) == 29 and all(any(np.isclose(t, c) for c in TEMPERATURES) for t in temps)
    summary = json.loads((best / "val_metrics.json").read_text())["temperature"]
    assert list(summary["temperatures"].values()) == pytest.approx(temps)
    assert summary["mean_ece_fitted"] <= summary["mean_ece_t1"] + 1e-12  # fitted on these images: never worse
    predictor = Predictor([best], PredictOptions())
    pixels = torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8)
    raw = predictor.probabilities(pixels, ["left"], [{}])
    calibrated = predictor.probabilities(pixels, ["left"], [{}], calibrated=True)
    torch.testing.assert_close(calibrated, scaled_probabilities(raw, torch.tensor(temps, dtype=torch.float32)))
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"mean_dice": 0.5, "num_images": 1,
                                      "per_class": {n: 0.5 for n in predictor.catalogue.names}}))
    report = write_report(plain_run, evaluation).read_text()
    assert "temperature scaling (validation)" in report


def test_export_command_reports_the_check_and_needs_something_to_do(checkpoint, tmp_path, capsys):
    assert export_cli.main(["--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--size", "64"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["onnx"]
    assert report["ok"] and report["max_abs_logit_diff"] <= 1e-4 and report["torch_ms"] > 0
    with pytest.raises(SystemExit):
        export_cli.main(["--checkpoint", str(checkpoint)])
    assert "give --onnx FILE and/or --save-pretrained DIR" in capsys.readouterr().err


def test_save_pretrained_round_trip_and_the_offline_hub_cache(checkpoint, tmp_path, monkeypatch):
    original = load_exported(checkpoint)
    saved = save_pretrained(original, tmp_path / "pretrained")
    card = (saved / MODEL_CARD).read_text()
    assert card.startswith("---\nlibrary_name: mmseg-text") and "Scaphoid" in card
    again = from_pretrained(saved)
    x = torch.from_numpy(example_inputs(original, OnnxGraph(original))["image"])
    context = OnnxGraph(original)._context
    feats = caption_features(original)
    caption = tuple(torch.from_numpy(feats[n]) for n in CAPTION_INPUTS)
    with torch.no_grad():
        np.testing.assert_array_equal(again.model(x, context(1, caption)).numpy(),
                                      original.model(x, context(1, caption)).numpy())
    np.testing.assert_array_equal(again.thresholds, original.thresholds)
    # a hub repo id resolves from the local cache with the hub off (the layout snapshot_download reads)
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--hand-bones" / "snapshots" / ("0" * 40)
    shutil.copytree(saved, snapshot)
    (cache / "models--someone--hand-bones" / "refs").mkdir()
    (cache / "models--someone--hand-bones" / "refs" / "main").write_text("0" * 40)
    hub = from_pretrained("someone/hand-bones", cache_dir=str(cache), local_files_only=True)
    np.testing.assert_array_equal(hub.thresholds, original.thresholds)
    with pytest.raises(FileNotFoundError, match="someone/missing: not in the local hub cache"):
        from_pretrained("someone/missing", cache_dir=str(cache), local_files_only=True)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        from_pretrained(tmp_path / "nowhere" / "at" / "all")
