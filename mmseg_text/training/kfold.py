"""k-fold training: every fold of the stratified group split, out-of-fold thresholds, one ensemble directory.

    RUN/fold0/best ... RUN/fold{k-1}/best   exported models (``mmseg-predict --checkpoint RUN`` takes them all)
    RUN/fold*/oof_counts.npz                the best model's Dice counts on its own validation fold
    RUN/thresholds.json                     per-class thresholds tuned on all out-of-fold counts together
Folds resume one by one: a fold whose summary.json exists is kept, a fold with checkpoints resumes from them.
Out-of-fold probabilities are kept as their sufficient statistics (per image, class and candidate threshold the
three Dice counts), which is all threshold tuning needs: ~100 KB per fold instead of gigabytes of maps.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional, Sequence

import numpy as np

from mmseg_text.catalogue import load_catalogue
from mmseg_text.config import Config
from mmseg_text.io import atomic_write_json
from mmseg_text.run_layout import RunLayout
from mmseg_text.thresholds import SweepCounts, load_sweep
from mmseg_text.training.loop import train
from mmseg_text.training.state import list_checkpoints
from mmseg_text.training.validation import tuned_thresholds

logger = logging.getLogger(__name__)


def fold_config(cfg: Config, fold: int) -> Config:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=fold),
                               output_dir=str(RunLayout(cfg.output_dir).fold(fold).root))


def train_folds(cfg: Config, folds: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Train the folds (all by default) one after another, then tune thresholds on the out-of-fold counts."""
    folds = list(range(cfg.data.num_folds)) if folds is None else list(folds)
    bad = [k for k in folds if not 0 <= k < cfg.data.num_folds]
    if bad:
        raise ValueError(f"--folds {bad} out of range: data.num_folds={cfg.data.num_folds}")
    for fold in folds:
        fold_cfg = fold_config(cfg, fold)
        if RunLayout(fold_cfg.output_dir).is_finished:
            logger.info("fold %d: finished earlier (%s), kept", fold, fold_cfg.output_dir)
            continue
        logger.info("fold %d of %d -> %s", fold, cfg.data.num_folds, fold_cfg.output_dir)
        train(fold_cfg, resume="latest" if list_checkpoints(fold_cfg.output_dir) else None)
    return write_oof_thresholds(cfg)


def write_oof_thresholds(cfg: Config) -> dict[str, Any]:
    """RUN/thresholds.json from every finished fold's out-of-fold counts (all folds must be there)."""
    run = RunLayout(cfg.output_dir)
    paths = [run.fold(k).oof_counts for k in range(cfg.data.num_folds)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        logger.info("out-of-fold thresholds wait for every fold; missing %s", missing)
        return {"folds_done": len(paths) - len(missing), "thresholds": None}
    counts = SweepCounts.concat([load_sweep(p) for p in paths])
    thresholds, rules, oof_dice = tuned_thresholds(counts)
    plain = counts.mean_dice()
    at_half = float(np.mean(plain[:, int(np.argmin(np.abs(counts.candidates - 0.5)))]))
    thresholds_only = float(np.mean(plain.max(axis=1)))  # the same tuning without post-processing rules
    doc = {"classes": list(load_catalogue(cfg.data.classes).names), "thresholds": thresholds, "postprocess": rules,
           "out_of_fold_images": len(counts), "out_of_fold_mean_dice": oof_dice, "out_of_fold_mean_dice_at_0.5": at_half,
           "out_of_fold_mean_dice_thresholds_only": thresholds_only}
    atomic_write_json(run.thresholds, doc)
    logger.info("out-of-fold mean Dice %.4f with tuned thresholds and rules (%.4f thresholds only, %.4f at 0.5), "
                "%d images", oof_dice, thresholds_only, at_half, len(counts))
    return {"folds_done": len(paths), **doc}
