"""Helpers of the end-to-end tests: a tiny configuration: 64 px, a LayerNorm encoder, a random tiny CLIP text tower.

ConvNeXt (LayerNorm) and a GroupNorm decoder keep every statistic per sample, so a 2-process DDP
run and a single-process run over the same global batch compute the same loss.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_config_dict(root: Path, out: Path, cache: Path) -> dict:
    return {
        "data": {"root": str(root), "image_size": 64, "num_folds": 2, "num_workers": 0,
                 "cache_dir": str(cache / "data")},
        "text": {"mode": "meta+classes", "model": "tiny-clip", "pretrained": None, "cache_dir": str(cache / "text")},
        "model": {"encoder": "convnext_atto", "decoder_channels": [32, 32, 16, 16, 8], "condition_stages": [0, 1],
                  "attn_heads": 2, "norm": "group"},
        "train": {"epochs": 100, "max_steps": 6, "batch_size": 4, "lr": 2e-3, "warmup_steps": 1, "eval_every": 3,
                  "checkpoint_every": 3, "log_every": 1},
        "output_dir": str(out),
    }


def train_tiny_run(tiny_root: Path, base: Path) -> Path:
    """Train the tiny config for 4 steps (one validation, best/ exported) under ``base``; return its config path."""
    from mmseg_text.config import load_config
    from mmseg_text.training.loop import train

    doc = tiny_config_dict(tiny_root, base / "run", base / "cache")
    doc["train"].update({"max_steps": 4, "checkpoint_every": 0, "eval_every": 4})
    cfg_path = base / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    train(load_config(cfg_path))
    return cfg_path


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                "ACCELERATE_USE_CPU": "1", "PYTHONUNBUFFERED": "1"})
    return env


def script(name: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / name)]


def logged_losses(run_dir: Path) -> list[float]:
    """``train/loss`` per step from the run's TensorBoard event files (the loss curve lives in the tracker,
    not in summary.json). Files are read oldest first, so a resumed run's values replace the killed run's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    by_step: dict[int, float] = {}
    files = sorted(Path(run_dir, "logs").rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    for path in files:
        acc = EventAccumulator(str(path))
        acc.Reload()
        if "train/loss" in acc.Tags()["scalars"]:
            by_step.update({e.step: e.value for e in acc.Scalars("train/loss")})
    return [by_step[s] for s in sorted(by_step)]
