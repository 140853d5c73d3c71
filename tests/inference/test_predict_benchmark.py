"""benchmarks/predict.py --quick runs and reports consistent numbers (no timing thresholds: CI machines vary)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# one worker for the module (make test runs --dist loadgroup): its tests share one ~4 min benchmark run, which
# would otherwise run once on each worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("predict_benchmark")]

REPO = Path(__file__).resolve().parents[2]
REL = 3e-3  # every reported number has 4 significant digits; a ratio of two of them agrees to ~1e-3


@pytest.fixture(scope="module")
def report() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "predict.py"), "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _positive(values: dict) -> None:
    assert values and all(v > 0 for v in values.values()), values


def test_batched_vs_per_image_rates_and_ratio_agree_with_the_times(report):
    section = report["batched_vs_per_image"]
    n = section["images"]
    assert n == report["setup"]["images"] > 0
    assert section["batch_size"]["per_image"] == 1 and section["batch_size"]["batched"] > 1
    for part in ("probabilities", "predict_call"):
        seconds, rates = section[part]["median_s"], section[part]["images_per_s"]
        _positive(seconds)
        _positive(rates)
        for case in ("batched", "per_image"):
            assert rates[case] == pytest.approx(n / seconds[case], rel=REL)
        ratio = section[part]["ratio_of_medians"]
        assert ratio == pytest.approx(rates["batched"] / rates["per_image"], rel=REL)
        assert ratio == pytest.approx(seconds["per_image"] / seconds["batched"], rel=REL)
        assert section[part]["median_paired_ratio"] > 0
    assert section["predictor_build_s"] > 0


def test_windows_vs_full_times_memory_and_window_count(report):
    section = report["windows_vs_full"]
    size, window, overlap = section["image_size"], section["window"], section["overlap"]
    assert size > window
    stride = int(window * (1 - overlap))
    per_side = -(-(size - window) // stride) + 1
    assert section["windows_per_image"] == per_side ** 2
    case = section["no_text"]
    assert case["windows_run_per_image"] == section["windows_per_image"]  # row bands: each window once
    assert case["windows_run_per_image_full_map"] == section["windows_per_image"]  # MONAI tiled as computed
    seconds = case["median_s"]
    assert set(seconds) == {"windows", "windows_full_map", "full"}
    _positive(seconds)
    assert case["time_ratio_windows_over_full"]["ratio_of_medians"] == pytest.approx(
        seconds["windows"] / seconds["full"], rel=REL)
    assert case["time_ratio_windows_over_full"]["median_paired_ratio"] > 0
    assert case["time_ratio_windows_over_windows_full_map"]["ratio_of_medians"] == pytest.approx(
        seconds["windows"] / seconds["windows_full_map"], rel=REL)
    peaks, growth, before = case["peak_rss_mb"], case["peak_rss_delta_mb"], case["rss_before_mb"]
    _positive(peaks)
    _positive(before)
    assert case["memory_ratio_full_over_windows"] == pytest.approx(peaks["full"] / peaks["windows"], rel=REL)
    assert case["memory_ratio_windows_over_full"] == pytest.approx(peaks["windows"] / peaks["full"], rel=REL)
    assert case["memory_ratio_windows_full_map_over_full"] == pytest.approx(
        peaks["windows_full_map"] / peaks["full"], rel=REL)
    # The row band, computed: 29 classes + the blend count, float32, a window's height + 2 blocks of 32 rows.
    classes = round(case["full_map_mb"] * 2**20 / (size * size * 4))
    band_rows = (-(-window // 32) + 2) * 32
    assert case["stitch_band_mb"] == pytest.approx((classes + 1) * band_rows * size * 4 / 2**20, rel=REL)
    assert case["stitch_band_mb_worker"] == case["stitch_band_mb"] < case["full_map_mb"]
    assert case["mask_agreement_windows_vs_full_map"] > 0.999  # float16 stitching of the full map tips a few pixels
    for k in ("windows", "windows_full_map", "full"):
        assert growth[k] >= 0
        assert peaks[k] >= (before[k] + growth[k]) * (1 - REL)  # the process peak includes the forward's
    if growth["windows"] > 0:
        assert case["memory_delta_ratio_full_over_windows"] == pytest.approx(growth["full"] / growth["windows"], rel=REL)
    _positive(case["subprocess_first_call_s"])


def test_ensemble_cost_ratio_and_one_shared_first_pass(report):
    section = report["ensemble_cost"]
    assert section["with_meta"] is True
    seconds = section["median_s"]
    _positive(seconds)
    assert section["ratio_two_over_one"]["ratio_of_medians"] == pytest.approx(
        seconds["two_members"] / seconds["one_member"], rel=REL)
    one, two = section["passes"]["one_member"], section["passes"]["two_members"]
    for counts, members in ((one, 1), (two, 2)):
        assert counts["image_facts_calls_per_batch"] == 1
        assert counts["probabilities_calls_per_batch"] == 2  # the first pass and the final pass
        assert counts["first_pass_images_per_image"] == 1.0
        assert counts["model_forwards_per_batch_per_member"] == [2] * members
    assert section["first_pass_ran"] is True
    assert section["first_pass_not_repeated_per_member"] is True
