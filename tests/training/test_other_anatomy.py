"""Any class catalogue end to end: a non-hand dataset (5 shape classes, no hand geometry) trains with every
text mode, predicts with --with-meta, evaluates and writes the report, with nothing hand-specific assumed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmseg_text.cli import evaluate as evaluate_cli
from mmseg_text.cli import predict as predict_cli
from mmseg_text.cli import report as report_cli
from mmseg_text.config import load_config
from mmseg_text.data.synthetic import write_shapes_dataset
from mmseg_text.inference.model_dir import load_exported
from mmseg_text.training.loop import train
from mmseg_text.rle import read_submission

from tests.runs import tiny_config_dict

pytestmark = pytest.mark.slow
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), ids=6, size=96, num_classes=NUM_CLASSES, seed=0)


def _config(root: Path, base: Path, mode: str) -> Path:
    doc = tiny_config_dict(root, base / "run", base / "cache")
    doc["data"]["classes"] = str(root / "shapes.yaml")
    doc["text"]["mode"] = mode
    if mode == "none":
        doc["model"]["conditioning"] = "none"
    doc["train"].update({"max_steps": 3, "eval_every": 3, "checkpoint_every": 0})
    path = base / "shapes.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("mode", ["none", "classes", "meta", "meta+classes"])
def test_non_hand_catalogue_trains_predicts_evaluates_and_reports(shapes_root, tmp_path, mode, capsys):
    summary = train(load_config(_config(shapes_root, tmp_path, mode)))
    assert summary["steps"] == 3
    assert set(summary["last"]["per_class"]) == {"disc", "square", "triangle", "ring-segment", "bar"}
    assert set(summary["last"]["grouped"]) == {"round", "angular"} and summary["last"]["subgroups"] == {}
    best = tmp_path / "run" / "best"
    exported = load_exported(best)
    assert len(exported.catalogue) == NUM_CLASSES and exported.catalogue.hand_geometry is None
    assert exported.model.num_classes == NUM_CLASSES

    csv = tmp_path / "submission.csv"
    code = predict_cli.main(["--checkpoint", str(best), "--images", str(shapes_root / "test" / "DCM"), "--with-meta",
                             "--meta", str(shapes_root / "meta_data.csv"), "--out", str(csv),
                             "--save-overlays", str(tmp_path / "overlays")])
    assert code == 0, capsys.readouterr().err
    frame = read_submission(csv)
    assert len(frame) == NUM_CLASSES * 4 and list(frame["class"][:NUM_CLASSES]) == list(exported.catalogue.names)
    assert evaluate_cli.main(["--pred", str(csv), "--gt", str(shapes_root / "test" / "outputs_json"),
                              "--classes", str(shapes_root / "shapes.yaml"), "--out", str(tmp_path / "run")]) == 0
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert evaluation["num_images"] == 4 and set(evaluation["groups"]) == {"round", "angular"}
    assert report_cli.main([str(tmp_path / "run"), "--evaluation", str(tmp_path / "run" / "evaluation.json"),
                            "--overlays", str(tmp_path / "overlays")]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"{evaluation['mean_dice']:.4f}" in report and "| disc |" in report
    assert "| test Dice, round |" in report and "| test Dice, angular |" in report and "worst classes" in report
    calibration = json.loads((best / "val_metrics.json").read_text())["calibration"]
    assert set(calibration["ece"]) == set(exported.catalogue.names) and 0.0 <= calibration["mean_ece"] <= 1.0
    assert f"{calibration['mean_ece']:.4f}" in report and (tmp_path / "run" / "reliability.png").is_file()
    assert "connected-component rule (chosen on validation)" in report  # the rules of best/thresholds.json, listed


def test_captions_of_a_catalogue_without_hand_geometry_have_no_side_or_angle(shapes_root):
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.data.index import build_index

    cfg = load_config(None, [f"data.root={shapes_root}", f"data.classes={shapes_root / 'shapes.yaml'}",
                             "data.num_folds=2", f"data.cache_dir={shapes_root / '.cache-test'}"])
    index = build_index(cfg.data, load_catalogue(cfg.data.classes), progress=False)
    assert {f.side for f in index.facts} == {"unknown"}
    assert all(f.meta["wrist_angle_deg"] is None and f.meta["age"] is not None for f in index.facts)
    assert not (shapes_root / ".cache-test" / "derived").exists()  # nothing derived, nothing cached
