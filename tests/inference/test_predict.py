"""Prediction to CSV, its RLE round trip, evaluation, and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import pandas as pd
import pytest

from mmseg_text.cli import predict as predict_cli
from mmseg_text.cli import train as train_cli
from mmseg_text.cli.evaluate import main as evaluate_main
from mmseg_text.inference.predictor import ImageFiles, PredictOptions, Predictor
from mmseg_text.data.images import read_image
from mmseg_text.rle import read_submission, rle_decode

from tests.runs import train_tiny_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_root, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("predict")
    train_tiny_run(tiny_root, base)
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
    from mmseg_text.inference.model_dir import load_exported

    names = list(load_exported(checkpoint).catalogue.names)
    assert len(frame) == 29 * len(files)
    for _, rows in frame.groupby("image_name", sort=False):
        assert list(rows["class"]) == names  # class order inside each image
    assert len(list((tmp_path / "overlays").glob("*.png"))) == len(files)

    # Decoding the CSV gives exactly the masks the predictor thresholded (same captions: with meta).
    predictor = Predictor([checkpoint], PredictOptions(with_meta=True, meta_file=str(tiny_root / "meta_data.xlsx")))
    path = files[0]
    image = read_image(path)
    batch = ImageFiles([path], predictor.preprocess)[0]["pixels"][None]
    metas = [predictor.person_facts(path)]
    facts = predictor.image_facts(batch, [path], metas)
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


def test_non_editable_install_predicts_from_an_empty_folder(checkpoint, tiny_root, tmp_path, capsys):
    """``pip install .`` (a wheel, not the checkout) and ``mmseg-predict`` run from an empty folder: the
    catalogue, templates and preprocessing come from the exported model and the package data alone."""
    import subprocess
    import sys

    import shutil

    repo = Path(__file__).resolve().parents[2]
    source = tmp_path / "source"  # the package files only: building writes build/ and *.egg-info beside them
    shutil.copytree(repo / "mmseg_text", source / "mmseg_text", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, source / name)
    wheel_dir, site, empty = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(source)], check=True,
                   cwd=tmp_path)
    subprocess.run(pip + ["install", "--no-deps", "--no-compile", "--target", str(site), *map(str, wheel_dir.glob("*.whl"))],
                   check=True)
    assert (site / "mmseg_text" / "assets" / "hand_bones.yaml").is_file()  # package data is in the wheel
    assert (site / "mmseg_text" / "assets" / "configs" / "demo.yaml").is_file()  # so is mmseg-train --config demo
    code = ("import mmseg_text, sys; from mmseg_text.cli.predict import main; "
            "print('package:', mmseg_text.__file__); sys.exit(main(sys.argv[1:]))")
    out = empty / "submission.csv"
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, "--checkpoint", str(checkpoint), "--images",
                           str(tiny_root / "test" / "DCM"), "--with-meta", "--meta", str(tiny_root / "meta_data.xlsx"),
                           "--out", str(out)], cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"package: {site}" in proc.stdout  # the installed copy ran, not the checkout
    reference = tmp_path / "reference.csv"
    assert predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(tiny_root / "test" / "DCM"),
                             "--with-meta", "--meta", str(tiny_root / "meta_data.xlsx"), "--out", str(reference)]) == 0
    assert out.read_text() == reference.read_text()  # same masks as from the checkout


class _PointwiseModel(torch.nn.Module):
    """A 1x1 convolution: flip-equivariant, and it ignores captions."""

    def __init__(self, in_chans: int, k: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, k, 1)

    def forward(self, images, context=None):
        return self.conv(images)


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta(checkpoint):
    predictor = Predictor([checkpoint], PredictOptions(tta_hflip=False))
    member = predictor.members[0]
    member.exported.model = _PointwiseModel(predictor.preprocess.in_chans, len(predictor.catalogue)).eval()
    member.exported.cfg.train.channels_last = False
    images = torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8)
    plain = predictor.probabilities(images, ["left", "right"], [{}, {}])
    predictor.tta = True
    torch.testing.assert_close(predictor.probabilities(images, ["left", "right"], [{}, {}]), plain)


def test_the_mirrored_view_reads_the_mirrored_side_in_its_caption(checkpoint, monkeypatch):
    predictor = Predictor([checkpoint], PredictOptions(tta_hflip=True))
    text = predictor.members[0].text
    seen: list[str] = []
    real = text.context
    monkeypatch.setattr(text, "context", lambda captions, n, device: (seen.extend(captions), real(captions, n, device))[1])
    meta = {"age": 40.0, "sex": "female", "weight": 60.0, "height": 165.0, "wrist_angle_deg": 5.0, "bent_wrist": False}
    predictor.probabilities(torch.zeros(1, 64, 64, dtype=torch.uint8), ["right"], [meta])
    assert len(seen) == 2 and "right hand of a 40-year-old woman" in seen[0] and "left hand" in seen[1]


def test_an_ensemble_is_the_mean_of_its_members_and_one_listed_twice_is_itself(checkpoint, tiny_root):
    images = torch.stack([ImageFiles([p], Predictor([checkpoint], PredictOptions()).preprocess)[0]["pixels"]
                          for p in sorted((tiny_root / "test" / "DCM").rglob("*.png"))[:2]])
    single = Predictor([checkpoint], PredictOptions())
    twice = Predictor([checkpoint, checkpoint], PredictOptions())
    sides, metas = ["unknown"] * 2, [{}, {}]
    p1 = single.probabilities(images, sides, metas)
    torch.testing.assert_close(twice.probabilities(images, sides, metas), p1)
    np.testing.assert_allclose(twice.thresholds, single.thresholds)
    # Two different members: the ensemble is exactly the mean of their probabilities.
    other = Predictor([checkpoint], PredictOptions())
    with torch.no_grad():
        for p in other.members[0].exported.model.head.parameters():
            p.add_(0.5)
    pair = Predictor([checkpoint], PredictOptions())
    pair.members = [single.members[0], other.members[0]]
    torch.testing.assert_close(pair.probabilities(images, sides, metas),
                               0.5 * (p1 + other.probabilities(images, sides, metas)))


def test_windows_at_a_higher_resolution_and_a_run_directory_as_an_ensemble(checkpoint, tiny_root, tmp_path):
    import shutil

    runs = tmp_path / "kfold"
    for fold in range(2):  # a k-fold run directory: fold*/best, found below the given path
        shutil.copytree(checkpoint, runs / f"fold{fold}" / "best")
    out = tmp_path / "windows.csv"
    assert predict_cli.main(["--checkpoint", str(runs), "--images", str(tiny_root / "test" / "DCM"), "--resolution", "128",
                             "--window-overlap", "0.5", "--tta", "--out", str(out)]) == 0
    predictor = Predictor([runs], PredictOptions(resolution=128))
    assert len(predictor.members) == 2 and predictor.preprocess.image_size == 128
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))
    batch = ImageFiles(files[:2], predictor.preprocess)
    images = torch.stack([batch[i]["pixels"] for i in range(2)])
    probs = predictor.probabilities(images, ["unknown"] * 2, [{}, {}])
    assert probs.shape == (2, 29, 128, 128) and torch.isfinite(probs).all()
    assert len(read_submission(out)) == 29 * len(files)


def test_derived_meta_replaces_the_first_pass(checkpoint, tiny_root, tmp_path, monkeypatch):
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))
    table = tmp_path / "angles.csv"
    pd.DataFrame({"image_id": [files[0].stem], "side": ["left"], "wrist_angle_deg": [42.0]}).to_csv(table, index=False)
    predictor = Predictor([checkpoint], PredictOptions(with_meta=True, meta_file=str(tiny_root / "meta_data.xlsx"),
                                                      derived_meta=str(table)))
    calls = []
    real = predictor.probabilities
    monkeypatch.setattr(predictor, "probabilities", lambda *a: (calls.append(a[0].shape[0]), real(*a))[1])
    images = torch.stack([ImageFiles(files[:2], predictor.preprocess)[i]["pixels"] for i in range(2)])
    facts = predictor.image_facts(images, files[:2], [{}, {}])
    assert facts[0] == {"side": "left", "wrist_angle_deg": 42.0, "bent_wrist": True}
    assert calls == [1]  # one first pass, for the image the table does not list


def test_members_with_other_encoders_normalise_their_own_input_and_a_run_threshold_file_wins(checkpoint, tmp_path):
    import json
    import shutil

    from mmseg_text.data.preprocess import Preprocessor

    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "a" / "best")
    shutil.copytree(checkpoint, run / "b" / "best")
    pre = json.loads((run / "b" / "best" / "preprocessing.json").read_text())
    pre.update(mean=[0.5] * len(pre["mean"]), std=[0.5] * len(pre["std"]))  # another encoder's statistics
    (run / "b" / "best" / "preprocessing.json").write_text(json.dumps(pre))
    names = json.loads((checkpoint / "thresholds.json").read_text())["classes"]
    (run / "thresholds.json").write_text(json.dumps({"classes": names, "thresholds": [0.3] * len(names)}))
    predictor = Predictor([run], PredictOptions())
    pixels = torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8)
    a, b = (predictor.inputs(pixels, m) for m in predictor.members)
    expected = Preprocessor.from_dict(pre).to_tensor(pixels[0].numpy())
    torch.testing.assert_close(b[0], expected)
    assert not torch.allclose(a, b)
    np.testing.assert_allclose(predictor.thresholds, 0.3)  # tuned for the ensemble (e.g. out of fold)


def test_counterfactual_probe_sees_nothing_through_closed_gates_and_changes_through_open_ones(checkpoint, tiny_root):
    from mmseg_text.studies.probe import META_CHANGES, gate_values, probe
    from mmseg_text.models import iter_gates

    predictor = Predictor([checkpoint], PredictOptions(with_meta=True, meta_file=str(tiny_root / "meta_data.xlsx")))
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))[:2]
    pixels = torch.stack([ImageFiles(files, predictor.preprocess)[i]["pixels"] for i in range(2)])
    metas = [predictor.person_facts(p) for p in files]
    model = predictor.members[0].exported.model
    with torch.no_grad():
        for gate in iter_gates(model):
            gate.zero_()
    closed = probe(predictor, pixels, ["left", "right"], metas)
    assert set(closed["changes"]) == {"side flipped", *META_CHANGES, "class names rolled by one"}
    assert all(v == 0.0 for v in closed["gates"][str(checkpoint)])
    assert all(c["mean_abs_change"] == 0.0 and c["dice_vs_unchanged"] == 1.0 for c in closed["changes"].values())
    with torch.no_grad():
        for gate in iter_gates(model):
            gate.fill_(2.0)
    opened = probe(predictor, pixels, ["left", "right"], metas)
    assert gate_values(model)[0] == pytest.approx(np.tanh(2.0))
    assert opened["changes"]["side flipped"]["mean_abs_change"] > 0
    assert opened["changes"]["age +20 years"]["mean_abs_change"] > 0
    assert opened["changes"]["class names rolled by one"]["mean_abs_change"] > 0


def test_probe_command_writes_every_change_per_class(checkpoint, tiny_root, tmp_path, capsys):
    from mmseg_text.cli import probe as probe_cli

    out = tmp_path / "probe.json"
    assert probe_cli.main(["--checkpoint", str(checkpoint), "--images", str(tiny_root / "test" / "DCM"),
                           "--meta", str(tiny_root / "meta_data.xlsx"), "--n", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["images"]) == 2 and len(doc["changes"]) == 7
    assert all(len(c["per_class_dice"]) == 29 and 0.0 <= c["dice_vs_unchanged"] <= 1.0 for c in doc["changes"].values())
    assert "sex swapped" in capsys.readouterr().out


def test_prediction_writes_the_facts_its_captions_used_and_evaluate_splits_bent_wrists(checkpoint, tiny_root, tmp_path):
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))
    table = tmp_path / "angles.csv"
    angles = [42.0 if i % 2 == 0 else 3.0 for i in range(len(files))]  # alternate bent / straight
    pd.DataFrame({"image_id": [f.stem for f in files], "side": ["left"] * len(files),
                  "wrist_angle_deg": angles}).to_csv(table, index=False)
    out = tmp_path / "sub.csv"
    assert predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(tiny_root / "test" / "DCM"),
                             "--with-meta", "--meta", str(tiny_root / "meta_data.xlsx"), "--derived-meta", str(table),
                             "--out", str(out)]) == 0
    facts = pd.read_csv(tmp_path / "sub_facts.csv", dtype={"image_id": str})
    assert list(facts["image_id"]) == [f.stem for f in files] and list(facts["wrist_angle_deg"]) == angles
    assert list(facts["bent_wrist"]) == [a >= 15 for a in angles]
    from mmseg_text.evaluation.scoring import evaluate_submission

    result = evaluate_submission(out, tiny_root / "test" / "outputs_json", facts=tmp_path / "sub_facts.csv")
    wrist = result["subgroups"]
    assert (wrist["num_bent"], wrist["num_straight"]) == (sum(a >= 15 for a in angles), sum(a < 15 for a in angles))
    per_image = {name: np.mean(list(row.values())) for name, row in result["per_image"].items()}
    bent = [per_image[f.name] for f, a in zip(files, angles) if a >= 15]  # the subgroup mean is over its images
    assert wrist["bent"] == pytest.approx(np.mean(bent), abs=1e-6)
    total = (wrist["bent"] * wrist["num_bent"] + wrist["straight"] * wrist["num_straight"]) / len(files)
    assert total == pytest.approx(result["mean_dice"], abs=1e-6)


def test_loader_workers_write_the_same_csv_as_the_main_process(checkpoint, tiny_root, tmp_path):
    images = tiny_root / "test" / "DCM"
    csvs = []
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}.csv"
        assert predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out),
                                 "--num-workers", str(workers), "--batch-size", "2"]) == 0
        csvs.append(out.read_text())
    assert csvs[0] == csvs[1] and csvs[0].count("\n") > 29


def test_bf16_autocast_runs_the_network_in_bf16_and_returns_float32_close_to_float32(checkpoint, tiny_root):
    files = sorted((tiny_root / "test" / "DCM").rglob("*.png"))[:2]
    results = {}
    for precision in ("no", "bf16"):
        predictor = Predictor([checkpoint], PredictOptions(device="cpu", mixed_precision=precision))
        seen = []
        first_conv = next(m for m in predictor.members[0].exported.model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        pixels = torch.stack([ImageFiles(files, predictor.preprocess)[i]["pixels"] for i in range(2)])
        results[precision] = predictor.probabilities(pixels, ["unknown"] * 2, [{}, {}])
        assert seen[0] == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert results["bf16"].dtype == torch.float32
    difference = (results["bf16"] - results["no"]).abs()
    assert 0 < difference.max() < 0.05  # bf16 rounding moves probabilities, a little


def test_fp16_on_cpu_and_unknown_precisions_are_clear_errors(checkpoint, tmp_path):
    from mmseg_text.config import ConfigError, load_config

    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        Predictor([checkpoint], PredictOptions(device="cpu", mixed_precision="fp16"))
    config = tmp_path / "bad.yaml"
    config.write_text("predict:\n  mixed_precision: fp8\n")
    with pytest.raises(ConfigError, match="predict.mixed_precision"):
        load_config(config)
    config.write_text("predict:\n  num_workers: -1\n")
    with pytest.raises(ConfigError, match="predict.num_workers"):
        load_config(config)


def test_a_largest_component_rule_of_thresholds_json_is_applied_and_no_postprocess_ignores_it(checkpoint, tiny_root,
                                                                                              tmp_path):
    import shutil

    from mmseg_text.postprocess import keep_largest_component

    model = tmp_path / "best"
    shutil.copytree(checkpoint, model)
    doc = json.loads((model / "thresholds.json").read_text())
    doc["thresholds"] = [0.05] * len(doc["classes"])  # a random tiny model: low cuts give masks of many blobs
    doc["postprocess"] = ["largest"] * len(doc["classes"])
    (model / "thresholds.json").write_text(json.dumps(doc))
    images = tiny_root / "test" / "DCM"
    plain, cleaned = tmp_path / "plain.csv", tmp_path / "cleaned.csv"
    assert predict_cli.main(["--checkpoint", str(model), "--images", str(images), "--out", str(plain),
                             "--no-postprocess"]) == 0
    assert predict_cli.main(["--checkpoint", str(model), "--images", str(images), "--out", str(cleaned)]) == 0
    rows = zip(read_submission(plain).itertuples(), read_submission(cleaned).itertuples())
    paths = {p.name: p for p in images.rglob("*.png")}
    changed = 0
    for a, b in rows:
        size = read_image(paths[a.image_name]).shape[:2]
        before, after = rle_decode(a.rle, size), rle_decode(b.rle, size)
        np.testing.assert_array_equal(after, keep_largest_component(before))
        changed += int(not np.array_equal(before, after))
    assert changed > 0  # the rule did something here


def test_tune_chooses_again_on_the_same_validation_and_keeps_the_weights(checkpoint, tmp_path, capsys):
    """mmseg-tune with the run's own setting (thresholds only) reproduces its thresholds.json; with every rule the
    held-out Dice can only rise (a rule is kept only where it raises it); the weights are copied unchanged."""
    from mmseg_text.cli.tune import main as tune_main

    same, ruled = tmp_path / "same", tmp_path / "ruled"
    assert tune_main(["--checkpoint", str(checkpoint), "--out", str(same), "--rules", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["changed"] == {} and report["validation_images"] > 0
    before = json.loads((checkpoint / "thresholds.json").read_text())
    after = json.loads((same / "thresholds.json").read_text())
    assert after["thresholds"] == before["thresholds"] and after["postprocess"] == before["postprocess"]
    assert (same / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert tune_main(["--checkpoint", str(checkpoint), "--out", str(ruled), "--no-progress"]) == 0
    with_rules = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert with_rules["tuned_mean_dice"] >= report["tuned_mean_dice"] - 1e-12
    rules = json.loads((ruled / "thresholds.json").read_text())["postprocess"]
    assert set(rules) <= {"none", *with_rules["rules"]} and "exclusive" in with_rules["rules"]
    assert tune_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "bad"), "--rules", "biggest"]) == 1
    assert "unknown post-processing rule(s) ['biggest']" in capsys.readouterr().err


def test_an_exclusive_rule_at_prediction_reads_the_claims_above_one_half(checkpoint, tiny_root, tmp_path):
    """Every class on "exclusive" at a low threshold: the CSV holds each mask less the pixels another class has above
    0.5 (as the tuning counted; the bones it articulates with excepted), then its largest component."""
    import shutil

    from mmseg_text.postprocess import Claims, joint_neighbours, keep_largest_component

    model = tmp_path / "best"
    shutil.copytree(checkpoint, model)
    doc = json.loads((model / "thresholds.json").read_text())
    doc["thresholds"] = [0.3] * len(doc["classes"])
    doc["postprocess"] = ["exclusive"] * len(doc["classes"])
    (model / "thresholds.json").write_text(json.dumps(doc))
    images = tiny_root / "test" / "DCM"
    out = tmp_path / "exclusive.csv"
    assert predict_cli.main(["--checkpoint", str(model), "--images", str(images), "--out", str(out), "--no-tta"]) == 0
    predictor = Predictor([model], PredictOptions(tta_hflip=False))
    path = sorted(images.rglob("*.png"))[0]
    size = read_image(path).shape[:2]
    batch = ImageFiles([path], predictor.preprocess)[0]["pixels"][None]
    probs = predictor.probabilities(batch, ["unknown"], [predictor.person_facts(path)])[0]
    masks = predictor.masks_at_original_size(probs, size)
    predictor.thresholds = np.full(len(doc["classes"]), 0.5)
    claims = Claims.of(predictor.masks_at_original_size(probs, size))
    rows = read_submission(out)
    rows = rows[rows["image_name"] == path.name]
    neighbours = joint_neighbours(predictor.catalogue.attached_to, len(predictor.catalogue))
    above_half = np.stack([claims.of_class(j) for j in range(len(masks))])
    removed = 0
    for k, rle in enumerate(rows["rle"]):
        claimed = np.delete(above_half, [k, *neighbours[k]], axis=0).any(0)
        np.testing.assert_array_equal(claimed, claims.by_others(k, neighbours[k]))
        np.testing.assert_array_equal(rle_decode(rle, size), keep_largest_component(masks[k] & ~claimed))
        removed += int((masks[k] & claimed).sum())
    assert removed > 0  # the rule took pixels away here
