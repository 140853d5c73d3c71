"""mmseg-metadata-study: the four variants on the plain set and on degraded copies, paired to no conditioning."""
import json
from pathlib import Path

import pytest

from mmseg_text.config import load_config
from mmseg_text.studies import metadata_study
from mmseg_text.studies.ablation import aggregate
from mmseg_text.studies.metadata_study import TEXT_LR_POINT, VARIANTS, degraded_root, run_metadata_study

# test mean Dice per (level, variant) and seed: numbers help more as the image fades, captions a little, shuffled not
TRUTH = {0.0: {"none": 0.80, "captions": 0.80, "numbers": 0.80, "captions shuffled": 0.80},
         0.5: {"none": 0.60, "captions": 0.62, "numbers": 0.66, "captions shuffled": 0.60},
         1.0: {"none": 0.40, "captions": 0.44, "numbers": 0.52, "captions shuffled": 0.40}}
JITTER = [0.0, 0.01, -0.01, 0.005, -0.004]  # the same per seed for every variant: a paired design


def test_every_variant_is_a_valid_config_and_numbers_differ_from_captions_only_by_the_source():
    cfgs = {v.name: load_config("configs/metadata_study.yaml", list(v.overrides)) for v in VARIANTS}
    assert cfgs["none"].model.conditioning == "none" and cfgs["none"].text.mode == "none"
    assert cfgs["captions"].model.conditioning_source == "text" and cfgs["captions"].text.mode == "meta"
    assert cfgs["numbers"].model.conditioning_source == "numbers"
    assert cfgs["captions shuffled"].text.shuffle and not cfgs["captions"].text.shuffle
    a, b = cfgs["captions"].to_dict(), cfgs["numbers"].to_dict()
    assert {k for k in a["model"] if a["model"][k] != b["model"][k]} == {"conditioning_source"}
    assert a["text"] == b["text"] and a["train"] == b["train"] and a["data"] == b["data"]


def test_the_study_makes_each_degraded_set_and_pairs_each_variant_to_none(tmp_path):
    made, ablations = [], []

    def make_data(root, *, ids, size, seed, degrade, fade, skip_existing, progress):
        assert fade == "bones"
        made.append((Path(root), ids, size, seed, degrade))

    def ablate(config, out, seeds, overrides, variants, test):
        root = next(o.split("=", 1)[1] for o in overrides if o.startswith("data.root="))
        level = next(lv for lv in TRUTH if Path(root) == (Path("data/plain") if lv == 0 else
                                                         degraded_root(Path("data/plain"), lv)))
        ablations.append((level, seeds, test, [v.name for v in variants]))
        runs = {v.name: {s: {"mean": 0.5, "test mean": TRUTH[level].get(v.name, 0.81) + JITTER[s]}
                         for s in range(seeds)} for v in variants}
        return aggregate(runs)

    study = run_metadata_study(None, tmp_path, root="data/plain", ids=12, size=256, seeds=5, level_seeds=3,
                               levels=(0.5, 1.0), make_data=make_data, ablate=ablate, plain_extra=[TEXT_LR_POINT])
    assert made == [(Path("data/plain"), 12, 256, 0, 0.0), (Path("data/plain_degrade0.5"), 12, 256, 0, 0.5),
                    (Path("data/plain_degrade1"), 12, 256, 0, 1.0)]
    names = [v.name for v in VARIANTS]
    assert ablations == [(0.0, 5, True, names + [TEXT_LR_POINT.name]), (0.5, 3, True, names), (1.0, 3, True, names)]
    assert "train.text_lr_scale=10" in TEXT_LR_POINT.overrides
    by_level = {row["level"]: row for row in study["levels"]}
    assert by_level[1.0]["vs_none"]["numbers"]["mean_diff"] == pytest.approx(0.12)
    assert by_level[0.5]["vs_none"]["captions"]["mean_diff"] == pytest.approx(0.02)
    assert by_level[1.0]["vs_none"]["captions shuffled"]["mean_diff"] == pytest.approx(0.0)
    assert by_level[1.0]["vs_none"]["numbers"]["verdict"] == "better"
    assert by_level[0.0]["vs_none"][TEXT_LR_POINT.name]["mean_diff"] == pytest.approx(0.01)
    assert by_level[1.0]["numbers_vs_captions"]["mean_diff"] == pytest.approx(0.08)
    assert by_level[0.0]["numbers_vs_captions"]["verdict"] == "no difference"
    assert by_level[0.0]["variants"]["none"]["values"] == pytest.approx([0.8 + j for j in JITTER])
    saved = json.loads((tmp_path / "metadata_study.json").read_text())
    assert saved["levels"][2]["vs_none"]["numbers"]["mean_diff"] == pytest.approx(0.12)
    md = (tmp_path / "metadata_study.md").read_text()
    assert "| 1 | numbers | +0.120 [" in md and "| 0 | 5 | 0.800 ± 0.008 | 0.800 ± 0.008 |" in md
    assert (tmp_path / "metadata_study.png").stat().st_size > 10_000


def test_the_hand_fade_has_its_own_data_runs_and_files_and_shares_the_plain_level(tmp_path):
    made, outs = [], []

    def make_data(root, *, ids, size, seed, degrade, fade, skip_existing, progress):
        made.append((Path(root).name, degrade, fade))

    def ablate(config, out, seeds, overrides, variants, test):
        outs.append(Path(out).name)
        return aggregate({v.name: {s: {"mean": 0.5, "test mean": 0.8 + JITTER[s]} for s in range(seeds)}
                          for v in variants})

    study = run_metadata_study(None, tmp_path, root="data/plain", ids=4, size=64, seeds=2, level_seeds=2,
                               levels=(0.75, 1.0), fade="hand", make_data=make_data, ablate=ablate)
    assert made == [("plain", 0.0, "hand"), ("plain_degrade0.75_hand", 0.75, "hand"), ("plain_degrade1_hand", 1.0, "hand")]
    assert outs == ["degrade0", "degrade0.75_hand", "degrade1_hand"]  # degrade0: the bones study's plain runs
    assert study["fade"] == "hand" and [r["level"] for r in study["levels"]] == [0.0, 0.75, 1.0]
    assert (tmp_path / "metadata_study_hand.json").exists() and not (tmp_path / "metadata_study.json").exists()
    assert "only the metadata tells" in (tmp_path / "metadata_study_hand.md").read_text()
    with pytest.raises(ValueError, match="--fade"):
        run_metadata_study(None, tmp_path, root="data/plain", ids=4, size=64, fade="skin", make_data=make_data,
                           ablate=ablate)


def test_mmseg_ablate_runs_the_metadata_variants_on_one_level(tmp_path, monkeypatch):
    from mmseg_text.cli import ablate as cli
    from mmseg_text.studies import ablation

    seen = {}

    def fake_run_ablation(config, out, seeds, overrides, variants, test):
        seen.update(names=[v.name for v in variants], overrides=list(overrides), test=test)
        (Path(out)).mkdir(parents=True, exist_ok=True)
        (Path(out) / "ablation.md").write_text("table\n")
        return {"variants": {}}

    monkeypatch.setattr(ablation, "run_ablation", fake_run_ablation)
    assert cli.main(["--metadata", "--test", "--seeds", "3", "--out", str(tmp_path), "--variants", "none,numbers",
                     "data.root=data/synthetic_degrade1"]) == 0
    assert seen == {"names": ["none", "numbers"], "overrides": ["data.root=data/synthetic_degrade1"], "test": True}
    assert cli.main(["--metadata", "--positive-control", "--out", str(tmp_path)]) == 1
