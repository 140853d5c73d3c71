"""Every file and folder name of a run directory, an exported model directory and a prediction, in one place.

    RUN/                         RunLayout(RUN)
      config.yaml                the resolved run config
      summary.json               written last by a finished run (its presence marks the run as done)
      skipped_samples.tsv        unreadable samples, when data.skip_bad_samples
      logs/                      tracker files (TensorBoard)
      checkpoints/step_N/        training state (accelerator.save_state), rotated to train.keep_checkpoints
      best/                      the exported model of the best validation step (a model directory, below)
      oof_counts.npz             that model's Dice counts on its validation fold (out-of-fold thresholds)
      fold{k}/                   a k-fold run's folds, each a RUN of its own
      thresholds.json            a k-fold run's out-of-fold thresholds (a model directory has its own)

    best/ (a model directory)    model.safetensors, config.yaml, model_meta.json, classes.yaml,
                                 caption_templates.yaml, preprocessing.json, thresholds.json, val_metrics.json

    PRED.csv                     a submission; PRED_facts.csv beside it: the side and wrist angle its captions used

Nothing here imports torch: the names are data, read by training, inference, evaluation and the studies alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# ---- a model directory (written by inference.model_dir.export_model / models.build.save_model_dir)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "model_meta.json"
CLASSES_FILE = "classes.yaml"
TEMPLATES_FILE = "caption_templates.yaml"
PREPROCESSING_FILE = "preprocessing.json"
THRESHOLDS_FILE = "thresholds.json"
VAL_METRICS_FILE = "val_metrics.json"

# ---- a run directory
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped_samples.tsv"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
OOF_COUNTS_FILE = "oof_counts.npz"
EVALUATION_FILE = "evaluation.json"
FACTS_SUFFIX = "_facts.csv"

_STEP_DIR = re.compile(r"^step_(\d+)$")
_FOLD_DIR = re.compile(r"^fold(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def step_of(name: str) -> Optional[int]:
    """The step of a ``checkpoints/step_N`` folder name, else None."""
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def fold_of(name: str) -> Optional[int]:
    """The fold of a ``fold{k}`` folder name, else None."""
    match = _FOLD_DIR.match(name)
    return int(match.group(1)) if match else None


def facts_path(submission_csv: str | Path) -> Path:
    """``PRED_facts.csv`` beside ``PRED.csv``: the per-image facts a prediction's captions used."""
    csv = Path(submission_csv)
    return csv.with_name(f"{csv.stem}{FACTS_SUFFIX}")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (``output_dir``)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def skipped(self) -> Path:
        return self.root / SKIPPED_FILE

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def step_dir(self, step: int) -> Path:
        return self.checkpoints / step_dir_name(step)

    def step_tmp_dir(self, step: int) -> Path:
        """Where ``save_state`` writes before the rename into ``step_dir`` (a leftover marks a killed save)."""
        return self.checkpoints / f".tmp_{step_dir_name(step)}"

    @property
    def best(self) -> Path:
        return self.root / BEST_DIR

    @property
    def best_metrics(self) -> Path:
        return self.best / VAL_METRICS_FILE

    @property
    def oof_counts(self) -> Path:
        return self.root / OOF_COUNTS_FILE

    @property
    def thresholds(self) -> Path:
        return self.root / THRESHOLDS_FILE

    def fold(self, k: int) -> "RunLayout":
        return RunLayout(self.root / f"fold{k}")

    @property
    def is_finished(self) -> bool:
        return self.summary.is_file()
