"""benchmarks/peer.py runs end to end on the tiny dataset and reports both sides consistently (no Dice or
timing thresholds: 2 steps at 64 px learn nothing, and CI machines vary)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("segmentation_models_pytorch")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_peer_benchmark_reports_both_sides_on_the_same_budget(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)  # the run writes its preprocessing cache under the root
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "peer.py"), "--root", str(root), "--steps", "2",
           "--batch-size", "2", "--threads", "1", "--out", str(tmp_path / "out"),
           "data.image_size=64", "data.num_folds=2", "train.log_with=[]"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)

    ours, peer = report["ours"], report["peer"]
    assert report["setup"]["steps"] == 2 and report["setup"]["image_size"] == 64
    for side in (ours, peer):
        assert side["steps"] == 2 and side["images_seen"] == 4
        assert 0.0 <= side["test_mean_dice"] <= 1.0 and side["train_seconds"] > 0
    assert ours["test_images"] == peer["test_images"] > 0
    assert set(ours["test_grouped_dice"]) == set(peer["test_grouped_dice"]) == {"finger", "carpal", "forearm"}
    assert report["dice_ratio_ours_over_peer"] == pytest.approx(
        ours["test_mean_dice"] / max(peer["test_mean_dice"], 1e-9), rel=1e-3, abs=1e-3)
    assert report["time_ratio_peer_over_ours"] == pytest.approx(peer["train_seconds"] / ours["train_seconds"], rel=1e-2)
    assert report["ours_ahead"] == (ours["test_mean_dice"] > peer["test_mean_dice"])
    for side in ("ours", "peer"):  # both submissions went through the same scorer
        assert (tmp_path / "out" / f"{side}_evaluation" / "evaluation.json").is_file()
