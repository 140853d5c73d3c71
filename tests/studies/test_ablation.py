"""Ablation aggregation: mean ± std per variant, honest verdicts against the no-text baseline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmseg_text.studies.ablation import VARIANTS, Variant, aggregate, run_ablation, to_markdown


def _scores(mean: float) -> dict[str, float]:
    return {"mean": mean, "finger": mean + 0.01, "carpal": mean - 0.02, "forearm": mean, "bent": mean - 0.05,
            "straight": mean + 0.01}


def test_aggregate_reports_mean_std_and_flags_differences_within_the_seed_spread():
    runs = {"none": [_scores(0.80), _scores(0.82)],
            "meta": [_scores(0.805), _scores(0.825)],  # +0.005: inside a spread of ~0.014
            "classes": [_scores(0.90), _scores(0.91)]}  # +0.095: far outside
    result = aggregate(runs)
    assert result["variants"]["none"]["mean"]["mean"] == pytest.approx(0.81)
    assert result["variants"]["none"]["mean"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert result["variants"]["none"]["carpal"]["mean"] == pytest.approx(0.79)
    assert result["vs_baseline"]["meta"]["within_spread"] is True
    assert result["vs_baseline"]["classes"]["within_spread"] is False
    assert result["vs_baseline"]["classes"]["diff"] == pytest.approx(0.095)
    text = to_markdown(result, seeds=2)
    assert "**meta**: +0.0050 Dice (seed spread 0.0141) — within the seed spread" in text
    assert "**classes**: +0.0950" in text and "better than no text by more than the seed spread" in text
    assert "| none | 0.8100 ± 0.0141 |" in text


def test_real_captions_are_judged_against_the_shuffled_placebo():
    runs = {"none": [_scores(0.70), _scores(0.72)], "meta": [_scores(0.80), _scores(0.81)],
            "meta shuffled": [_scores(0.80), _scores(0.82)]}
    result = aggregate(runs)
    assert result["placebo"] == "meta shuffled"
    assert result["vs_baseline"]["meta"]["within_spread"] is False  # beats no text ...
    assert result["vs_placebo"]["meta"]["within_spread"] is True  # ... but not the placebo
    assert set(result["vs_placebo"]) == {"meta"}
    assert "no evidence that it differs from the shuffled captions" in to_markdown(result, seeds=2)


def test_run_ablation_reuses_finished_runs_and_writes_all_outputs(tmp_path):
    # Finished runs (summary.json present) are not trained again: an interrupted ablation resumes.
    variants = [VARIANTS[0], Variant("meta", ("text.mode=meta",))]
    # per seed: none 0.70 / 0.72 / 0.74, meta 0.71 / 0.74 / 0.77 -> paired differences 0.01, 0.02, 0.03
    for variant, base, step in zip(variants, (0.7, 0.71), (0.02, 0.03)):
        for seed in range(3):
            run = tmp_path / variant.name / f"seed{seed}"
            run.mkdir(parents=True)
            last = {"mean_dice": base + step * seed, "grouped": {"finger": base, "carpal": base, "forearm": base},
                    "subgroups": {"bent": None, "straight": base}}
            curve = [[100, base / 2], [200, base + step * seed]]
            (run / "summary.json").write_text(json.dumps({"last": last, "val_curve": curve}))
    result = run_ablation(None, tmp_path, seeds=3, variants=variants, launcher=["false"])
    assert set(result["variants"]) == {"none", "meta"}
    assert result["curves"]["meta"][2] == [[100, 0.355], [200, pytest.approx(0.77)]]  # the learning curves, per seed
    assert (tmp_path / "ablation_curves.png").stat().st_size > 1000
    assert "bent" not in result["variants"]["none"]  # unknown subsets are left out, not zero
    assert (tmp_path / "ablation.md").exists() and (tmp_path / "ablation.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["baseline"] == "none"
    # the unpaired columns stay: mean ± std over seeds
    assert saved["variants"]["meta"]["mean"]["mean"] == pytest.approx(0.74)
    assert saved["variants"]["meta"]["mean"]["std"] == pytest.approx(0.03)
    paired = saved["vs_baseline"]["meta"]["paired"]
    assert paired["seeds"] == [0, 1, 2] and paired["n"] == 3
    assert paired["differences"] == pytest.approx([0.01, 0.02, 0.03])
    assert paired["mean_diff"] == pytest.approx(0.02) and paired["sd_diff"] == pytest.approx(0.01)
    # MDE = (t(0.975, 2) + t(0.8, 2)) * sd / sqrt(3) = (4.3027 + 1.0607) * 0.01 / 1.7321
    assert paired["mde"] == pytest.approx(0.030966, rel=1e-4)
    # 1 resample in 27 is all 0.01 (all 0.03): more than the 2.5 % tails, so the interval is [0.01, 0.03]
    assert paired["ci_low"] == pytest.approx(0.01) and paired["ci_high"] == pytest.approx(0.03)
    # the paired t interval 0.02 ± 0.0248 holds 0 (t = 3.46, df = 2): not enough seeds to call it
    assert paired["t_low"] == pytest.approx(0.02 - 0.024841, abs=1e-5) and paired["verdict"] == "no difference"
    text = (tmp_path / "ablation.md").read_text()
    assert "| variant | seeds | paired diff | 95 % CI (bootstrap) | 95 % CI (t) | MDE | verdict |" in text
    assert "| meta | 3 | +0.0200 | [+0.0100, +0.0300] | [-0.0048, +0.0448] | 0.0310 | no difference |" in text
    assert "| meta | 0.7400 ± 0.0300 |" in text


def test_paired_comparisons_use_only_seeds_finished_for_both():
    runs = {"none": {0: _scores(0.70), 1: _scores(0.72), 2: _scores(0.74)},
            "meta": {0: _scores(0.72), 2: _scores(0.73)},  # seed 1 unfinished
            "meta shuffled": {1: _scores(0.80), 2: _scores(0.75)}}
    result = aggregate(runs)
    vs_none = result["vs_baseline"]["meta"]["paired"]
    assert vs_none["seeds"] == [0, 2] and vs_none["differences"] == pytest.approx([0.02, -0.01])
    assert vs_none["mean_diff"] == pytest.approx(0.005) and vs_none["verdict"] == "no difference"
    assert vs_none["ci_low"] == pytest.approx(-0.01) and vs_none["ci_high"] == pytest.approx(0.02)
    assert vs_none["mde"] == pytest.approx((12.706205 + 1.376382) * 0.0212132 / 2 ** 0.5, rel=1e-4)
    vs_placebo = result["vs_placebo"]["meta"]["paired"]
    assert vs_placebo["seeds"] == [2] and vs_placebo["verdict"] == "too few seeds" and vs_placebo["ci_low"] is None
    text = to_markdown(result, seeds=3)
    assert "| meta | 2 | +0.0050 | [-0.0100, +0.0200] |" in text and "| no difference |" in text
    assert "| meta | 1 | -0.0200 | – | – | – | too few seeds |" in text


def test_variants_needing_class_names_fall_back_to_the_conv_head_by_the_registry(tmp_path, capsys):
    from mmseg_text.studies.ablation import _with_head_fallback

    base = ["model.head=text_query", "text.mode=meta+classes"]
    assert _with_head_fallback(None, base + ["text.mode=classes"]) == base + ["text.mode=classes"]
    none = _with_head_fallback(None, base + list(VARIANTS[0].overrides))
    assert none[-1] == "model.head=conv" and "model.conditioning=none" in none
    assert "needs class names; using model.head=conv" in capsys.readouterr().out
    assert _with_head_fallback(None, ["text.mode=meta"]) == ["text.mode=meta"]  # conv head: nothing to change


def test_ablation_trains_through_the_package_not_the_scripts_folder(tmp_path, monkeypatch):
    import sys

    from mmseg_text.studies import ablation

    commands = []

    def fake_run(cmd, check):  # stands in for a training process: records the command, writes its summary
        commands.append(cmd)
        out = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("output_dir=")))
        out.mkdir(parents=True)
        last = {"mean_dice": 0.5, "grouped": {}, "subgroups": {}}
        (out / "summary.json").write_text(json.dumps({"last": last}))

    monkeypatch.setattr(ablation.subprocess, "run", fake_run)
    ablation.run_ablation(None, tmp_path, seeds=1, variants=[VARIANTS[0]])
    assert commands and commands[0][:3] == [sys.executable, "-m", "mmseg_text.cli.train"]
    assert "text.mode=none" in commands[0] and "model.conditioning=none" in commands[0]


def test_gate_trajectories_are_summarised_per_variant_and_plotted(tmp_path):
    # Text-on runs carry gate_curve; the ablation reports each gate's last value (mean ± std over seeds) and plots them.
    variants = [VARIANTS[0], Variant("meta", ("text.mode=meta",))]
    for variant in variants:
        for seed, last_gate in enumerate((0.10, 0.30)):
            run = tmp_path / variant.name / f"seed{seed}"
            run.mkdir(parents=True)
            summary = {"last": {"mean_dice": 0.7, "grouped": {}, "subgroups": {}}, "val_curve": [[100, 0.7]]}
            if variant.name == "meta":
                summary["gate_curve"] = [[50, [0.0, -0.01]], [100, [last_gate, -0.02]]]
            (run / "summary.json").write_text(json.dumps(summary))
    result = run_ablation(None, tmp_path, seeds=2, variants=variants, launcher=["false"])
    assert set(result["gates"]) == {"meta"}  # no text, no gates
    from mmseg_text.studies.ablation import final_gates

    (m0, sd0), (m1, sd1) = final_gates(result["gates"]["meta"])
    assert m0 == pytest.approx(0.20) and sd0 == pytest.approx(0.1414214, rel=1e-5)
    assert m1 == pytest.approx(-0.02) and sd1 == pytest.approx(0.0)
    assert "| meta | +0.200 ± 0.141, -0.020 ± 0.000 |" in (tmp_path / "ablation.md").read_text()
    assert (tmp_path / "ablation_gates.png").stat().st_size > 1000


def test_tables_show_the_catalogue_groups_and_subgroups_whatever_the_anatomy():
    # a non-hand catalogue: groups round / angular and no fact subgroups; the tables name them, never "–"
    runs = {name: [{"mean": 0.5 + d + s / 100, "round": 0.4 + d, "angular": 0.6 + d, "test mean": 0.45 + d,
                    "test round": 0.35 + d} for s in range(3)] for name, d in (("none", 0.0), ("meta", 0.01))}
    result = aggregate(runs)
    assert result["subsets"] == ["mean", "round", "angular", "test mean", "test round"]
    text = to_markdown(result, seeds=3)
    assert "| variant | mean | round | angular |" in text and "| variant | mean | round |" in text
    assert "–" not in text.split("## Against")[0] and "finger" not in text
    assert "### test round: against no text" in text  # every held-out subset is compared seed by seed


def test_held_out_scores_name_the_groups_and_fact_subgroups_of_the_evaluation():
    from mmseg_text.studies.held_out import held_out_scores

    result = {"mean_dice": 0.8, "groups": {"round": 0.7, "angular": 0.9},
              "subgroups": {"facts": "f.csv", "bent": 0.6, "num_bent": 2, "straight": None, "num_straight": 0}}
    assert held_out_scores(result) == {"test mean": 0.8, "test round": 0.7, "test angular": 0.9, "test bent": 0.6}
