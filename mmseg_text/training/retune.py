"""Choose an exported model's per-class thresholds and post-processing rules again, on its run's validation split.

Why: a rule added after a model was trained (or a model trained without ``train.tune_postprocess``) is tried
without training again, and the comparison with the old choice is paired exactly: same weights, same validation
images, only the rules differ. The weights are copied unchanged; ``thresholds.json`` and ``val_metrics.json`` of
the new folder hold the new choice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from mmseg_text.data.dataset import collate
from mmseg_text.inference.model_dir import export_model, load_exported
from mmseg_text.inference.tiling import WindowOptions
from mmseg_text.postprocess import check_rules
from mmseg_text.thresholds import TUNED_RULES
from mmseg_text.training.data_setup import build_run_data
from mmseg_text.training.validation import validate


def retune(model_dir: str | Path, out_dir: str | Path, *, rules: Sequence[str] = TUNED_RULES,
           data_root: Optional[str] = None, progress: bool = True) -> dict[str, Any]:
    """Validate the model of ``model_dir`` on the validation split of the run it was trained in (its config: root,
    fold, split seed; ``data_root`` overrides the root), tune thresholds and the per-class rule among ``rules``,
    and write the model with that choice to ``out_dir`` (atomically). Returns what changed, per class."""
    rules = tuple(check_rules(rules, len(rules), "--rules"))
    if "none" in rules:
        raise ValueError("--rules: 'none' is always tried; list the rules besides it")
    exported = load_exported(model_dir)
    cfg, catalogue = exported.cfg, exported.catalogue
    if data_root is not None:
        cfg.data.root = str(data_root)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    data = build_run_data(cfg, catalogue, progress=progress)
    loader = DataLoader(data.val, batch_size=cfg.train.batch_size, shuffle=False, collate_fn=collate,
                        num_workers=cfg.data.num_workers)
    model, loader = accelerator.prepare(exported.model, loader)
    result = validate(model, loader, accelerator, catalogue, text=data.text, tune_thresholds=True,
                      tune_postprocess=bool(rules), fit_temperature=cfg.train.fit_temperature,
                      channels_last=cfg.train.channels_last, window=cfg.data.input_size,
                      window_options=WindowOptions.from_config(cfg.predict), rules=rules)
    export_model(out_dir, accelerator.unwrap_model(model), cfg, catalogue, exported.preprocess,
                 thresholds=result.thresholds, postprocess=result.postprocess, temperatures=result.temperatures,
                 metrics=result.to_dict(catalogue))
    changed = {name: {"before": [float(t), r], "after": [t2, r2]}
               for name, t, r, t2, r2 in zip(catalogue.names, exported.thresholds, exported.postprocess,
                                             result.thresholds, result.postprocess)
               if r != r2 or abs(float(t) - t2) > 1e-9}
    return {"checkpoint": str(model_dir), "out": str(out_dir), "rules": list(rules),
            "validation_images": len(data.val), "tuned_mean_dice": result.tuned_mean_dice, "changed": changed}
