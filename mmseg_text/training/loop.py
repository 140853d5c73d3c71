"""The Accelerate training loop: ``train(cfg)``; ``mmseg-train`` / ``scripts/train.py`` is a thin shell over it.

Order as in the Accelerate examples: Accelerator -> seed -> data (index -> captions -> datasets) -> model ->
optimizer -> scheduler -> one ``prepare``. Gradient accumulation goes through ``accelerator.accumulate``;
validation rows are collected with ``gather_for_metrics``; state is saved with ``save_state``
(atomically, see checkpointing.py) and resumed with ``load_state`` + ``skip_first_batches``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.cpu_memory import freed_memory_returned
from mmseg_text.config import Config, ConfigError, to_yaml
from mmseg_text.data.dataset import collate
from mmseg_text.training.state import (clean_stale_temporaries, load_latest_state, read_trainer_state,
                                             save_training_state)
from mmseg_text.training.averaging import NoAveraging, build_averager, forward_all
from mmseg_text.training.data_setup import RunData, build_run_data
from mmseg_text.inference.model_dir import export_model
from mmseg_text.inference.tiling import WindowOptions
from mmseg_text.training.losses import build_loss
from mmseg_text.training.optim import build_optimizer, build_scheduler
from mmseg_text.training.validation import EvalResult, validate
from mmseg_text.io import atomic_write_json, atomic_write_text
from mmseg_text.models import build_model, iter_gates
from mmseg_text.run_layout import RunLayout
from mmseg_text.thresholds import save_sweep

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the state before the bad step was saved."""


@dataclass
class _Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of the current epoch already consumed
    best_dice: float = -1.0
    best_step: int = -1
    val_curve: list = field(default_factory=list)  # [step, validation mean Dice] per evaluation (kept on resume)
    gate_curve: list = field(default_factory=list)  # [step, [tanh g of every text gate]] per evaluation (text on)


def _make_accelerator(cfg: Config) -> Accelerator:
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,  # None -> accelerate config / launch flag
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with=list(cfg.train.log_with) or None,
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(RunLayout(cfg.output_dir).logs)),
        # Seedable sampler: the shuffle order of epoch e depends only on (seed, e), so a resumed
        # run and a DDP run see the same samples as an uninterrupted single-process run.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed),
    )


def _request_determinism(enabled: bool) -> None:
    """``train.deterministic``: deterministic kernels where torch has them, so that a seed gives the same weights
    on the same machine (same thread count). ``warn_only``: an op without a deterministic kernel (CUDA
    bilinear-upsample backward) warns instead of stopping the run; cuDNN autotuning, which picks kernels by timing,
    is turned off; cuBLAS gets the workspace setting it needs (read when CUDA starts, hence before the Accelerator)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _train_batch_size(cfg: Config, train_size: int, num_processes: int) -> int:
    """The configured batch, shrunk (with a log line) when the training set cannot fill one per process;
    an empty training set is an error naming the sizes (an epoch without a step would loop forever)."""
    if train_size < num_processes:
        raise ConfigError(f"the training split has {train_size} image(s) for {num_processes} process(es): "
                          f"no optimizer step is possible (data.root={cfg.data.root}, fold {cfg.data.fold} of "
                          f"{cfg.data.num_folds}); add images or lower data.num_folds")
    fits = train_size // num_processes
    if fits < cfg.train.batch_size:
        logger.warning("train.batch_size=%d does not fit %d training image(s) on %d process(es): using batch %d",
                       cfg.train.batch_size, train_size, num_processes, fits)
        return fits
    return cfg.train.batch_size


def _loaders(cfg: Config, data: RunData, batch_size: int) -> tuple[DataLoader, DataLoader]:
    common = dict(collate_fn=collate, num_workers=cfg.data.num_workers, persistent_workers=False,
                  pin_memory=torch.cuda.is_available())
    train_loader = DataLoader(data.train, batch_size=batch_size, shuffle=True, drop_last=True, **common)
    val_loader = DataLoader(data.val, batch_size=cfg.train.batch_size, shuffle=False, **common)
    return train_loader, val_loader


def _hparams(cfg: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in cfg.to_dict().items():
        items = values.items() if isinstance(values, dict) else [("", values)]
        for k, v in items:
            if isinstance(v, (int, float, str, bool)):
                flat[f"{section}.{k}" if k else section] = v
    return flat


def train(cfg: Config, *, resume: Optional[str] = None) -> dict[str, Any]:
    """Train, validate, checkpoint; returns (and writes) ``output_dir/summary.json``."""
    out = Path(cfg.output_dir)
    layout = RunLayout(out)
    _request_determinism(cfg.train.deterministic)
    accelerator = _make_accelerator(cfg)
    set_seed(cfg.train.seed)
    catalogue = load_catalogue(cfg.data.classes)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(out)  # what an interrupted save or export left behind
        atomic_write_text(layout.config, to_yaml(cfg))

    with accelerator.main_process_first():  # the main process builds the caches, the others read them
        data = build_run_data(cfg, catalogue, progress=accelerator.is_local_main_process)
    _report_skipped(accelerator, data, out)
    text = data.text

    model = build_model(cfg.model, num_classes=len(catalogue), text_dim=text.width if text else None,
                        image_size=cfg.data.input_size, in_chans=cfg.data.in_chans)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.train)
    train_loader, val_loader = _loaders(cfg, data, _train_batch_size(cfg, len(data.train), accelerator.num_processes))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)

    # Accelerate also syncs at the end of the loader, so a short last window is a step too.
    steps_per_epoch = max(1, math.ceil(len(train_loader) / cfg.train.grad_accum))
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    scheduler = accelerator.prepare(build_scheduler(optimizer, cfg.train, total_steps=total_steps,
                                                    num_processes=accelerator.num_processes))
    loss_fn = build_loss(cfg.train, crops=cfg.data.crop_size is not None)
    averager = build_averager(cfg.train, accelerator.unwrap_model(model), total_steps)
    if not isinstance(averager, NoAveraging):
        accelerator.register_for_checkpointing(averager)  # a resume continues the same average

    progress = _Progress()
    checkpoint = load_latest_state(accelerator, cfg.output_dir, resume)  # skips damaged ones with a warning
    if checkpoint is not None:
        progress = _Progress(**read_trainer_state(checkpoint)["progress"])
        accelerator.print(f"resumed from {checkpoint} at step {progress.step}")

    accelerator.init_trackers("train", config=_hparams(cfg))
    eval_every = cfg.train.eval_every or steps_per_epoch
    recent: list[float] = []  # per optimizer step since the last log line
    window: list[float] = []  # per micro-batch of the current optimizer step
    final_loss: Optional[float] = None  # mean of the last logging window
    started = time.perf_counter()
    images_seen = 0
    bar = tqdm(total=total_steps, initial=progress.step, desc="train", disable=not accelerator.is_local_main_process)
    last_eval: Optional[EvalResult] = None
    model.train()
    while progress.step < total_steps:
        train_loader.set_epoch(progress.epoch)  # the seedable sampler's shuffle order
        data.train.set_epoch(progress.epoch)  # the augmentation seeds (workers copy the dataset per epoch)
        batches = train_loader
        if progress.batches_in_epoch:
            batches = accelerator.skip_first_batches(train_loader, progress.batches_in_epoch)
        for batch in batches:
            progress.batches_in_epoch += 1
            with accelerator.accumulate(model):
                context = text.batch_context(batch, accelerator.device) if text else None
                logits = model(_images(batch, cfg), context)
                loss = loss_fn(logits, batch["masks"])
                _stop_if_diverged(accelerator, loss, progress, cfg)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window.append(accelerator.reduce(loss.detach(), reduction="mean").item())
            images_seen += batch["image"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            recent.append(sum(window) / len(window))  # mean over the accumulated micro-batches
            window.clear()
            progress.step += 1
            averager.update(accelerator.unwrap_model(model), progress.step)
            bar.update(1)
            if progress.step % cfg.train.log_every == 0 or progress.step == total_steps:
                final_loss = sum(recent) / len(recent)
                accelerator.log({"train/loss": final_loss, "train/lr": scheduler.get_last_lr()[0]}, step=progress.step)
                bar.set_postfix(loss=f"{final_loss:.4f}")
                recent.clear()
            if progress.step % eval_every == 0 or progress.step == total_steps:
                scored = averager.evaluated(model)  # with EMA, the averaged weights are the model
                last_eval = _evaluate(accelerator, scored, val_loader, text, catalogue, cfg, data, progress)
                model.train()
            if cfg.train.checkpoint_every and progress.step % cfg.train.checkpoint_every == 0:
                _save_state(accelerator, cfg, progress)
            if progress.step >= total_steps:
                break
        else:
            progress.epoch += 1
            progress.batches_in_epoch = 0
    bar.close()
    elapsed = time.perf_counter() - started
    if not (cfg.train.checkpoint_every and progress.step % cfg.train.checkpoint_every == 0):
        _save_state(accelerator, cfg, progress)  # the final state, unless the loop just saved it
    averaged = averager.finalize(forward_all(train_loader, lambda m, batch: m(
        _images(batch, cfg), text.batch_context(batch, accelerator.device) if text else None)))
    averaged_dice = None
    if averaged is not None:  # SWA: its average is validated once, with recomputed BatchNorm statistics
        last_eval = _evaluate(accelerator, averaged, val_loader, text, catalogue, cfg, data, progress, curve=False)
        averaged_dice = last_eval.mean_dice
    summary = _summary(cfg, catalogue, progress, last_eval, final_loss, elapsed, images_seen, accelerator)
    summary["averaged_val_mean_dice"] = averaged_dice  # SWA's average at the end (None for none / EMA)
    if accelerator.is_main_process:
        atomic_write_json(layout.summary, summary)
    accelerator.end_training()
    return summary


def _images(batch: dict, cfg: Config) -> torch.Tensor:
    images = batch["image"]
    return images.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else images


def _stop_if_diverged(accelerator: Accelerator, loss: torch.Tensor, progress: _Progress, cfg: Config) -> None:
    # Every rank must take the same decision, or the others would hang in the next all-reduce.
    bad = accelerator.reduce(torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=loss.device), reduction="sum")
    if bad.item() > 0:
        path = _save_state(accelerator, cfg, progress)
        raise TrainingDiverged(
            f"loss became {loss.item()} at step {progress.step + 1}; the state before this step is saved in {path}. "
            "Lower train.lr, raise train.warmup_steps, or use train.mixed_precision=bf16 instead of fp16.")


def _record_gates(accelerator: Accelerator, model: torch.nn.Module, progress: _Progress) -> None:
    """How far each text gate has opened (tanh g; 0 = text ignored), into the summary and the tracker: whether
    a text-on run that scores like text-off never opened its gates, or opened them to no avail."""
    gates = [float(torch.tanh(g.detach())) for g in iter_gates(accelerator.unwrap_model(model))]
    if gates:
        progress.gate_curve.append([progress.step, gates])
        accelerator.log({f"text/gate_{i}": value for i, value in enumerate(gates)}, step=progress.step)


def _save_state(accelerator: Accelerator, cfg: Config, progress: _Progress) -> Path:
    state = {"progress": progress.__dict__.copy()}
    return save_training_state(accelerator, cfg.output_dir, progress.step, state, keep=cfg.train.keep_checkpoints)


def _evaluate(accelerator, model, val_loader, text, catalogue: ClassCatalogue, cfg: Config, data: RunData,
              progress: _Progress, *, curve: bool = True) -> EvalResult:
    """Validate ``model``, record the learning and gate curves, export ``best/`` when it is the best so far."""
    result = _validate(accelerator, model, val_loader, text, catalogue, cfg, progress)
    if curve:
        progress.val_curve.append([progress.step, result.mean_dice])
        _record_gates(accelerator, model, progress)
    if result.mean_dice > progress.best_dice:
        progress.best_dice, progress.best_step = result.mean_dice, progress.step
        _export_best(accelerator, model, cfg, catalogue, data, result)
    return result


def _validate(accelerator, model, val_loader, text, catalogue: ClassCatalogue, cfg: Config, progress: _Progress) -> EvalResult:
    with freed_memory_returned():  # on CPU: validation's buffers are not kept for the training steps
        result = validate(model, val_loader, accelerator, catalogue, text=text,
                          tune_thresholds=cfg.train.tune_thresholds, tune_postprocess=cfg.train.tune_postprocess,
                          fit_temperature=cfg.train.fit_temperature, channels_last=cfg.train.channels_last,
                          window=cfg.data.input_size, window_options=WindowOptions.from_config(cfg.predict))
    accelerator.log({"val/dice": result.mean_dice, **{f"val/dice_{g}": v for g, v in result.grouped.items()}}, step=progress.step)
    accelerator.print(f"step {progress.step}: val mean Dice {result.mean_dice:.4f}")
    return result


def _export_best(accelerator: Accelerator, model, cfg: Config, catalogue: ClassCatalogue, data: RunData,
                 result: EvalResult) -> None:
    """``output_dir/best``: a self-contained model directory (inference/model_dir.py) of the best validation step.

    The weights are gathered by ``accelerator.get_state_dict`` on every process: under FSDP it is a collective
    (each rank holds a shard), so a main-process-only ``state_dict()`` would return a shard or hang."""
    state = accelerator.get_state_dict(model)  # all ranks; the full state dict on the main process
    if accelerator.is_main_process:
        layout = RunLayout(cfg.output_dir)
        export_model(layout.best, accelerator.unwrap_model(model), cfg, catalogue, data.preprocess,
                     thresholds=result.thresholds, postprocess=result.postprocess, temperatures=result.temperatures,
                     metrics=result.to_dict(catalogue),
                     state_dict=state)
        if result.sweep is not None:  # the best model's validation counts: out-of-fold threshold tuning (kfold.py)
            save_sweep(layout.oof_counts, result.sweep)
    accelerator.wait_for_everyone()


def _report_skipped(accelerator: Accelerator, data: RunData, out: Path) -> None:
    skipped = data.index.skipped + data.train.skipped + data.val.skipped
    if skipped and accelerator.is_main_process:
        lines = [f"{path}\t{reason}" for path, reason in skipped]
        listing = RunLayout(out).skipped
        atomic_write_text(listing, "\n".join(lines) + "\n")
        logger.warning("skipped %d bad samples (listed in %s)", len(skipped), listing)


def _summary(cfg: Config, catalogue: ClassCatalogue, progress: _Progress, last_eval: Optional[EvalResult],
             final_loss: Optional[float], elapsed: float, images_seen: int, accelerator: Accelerator) -> dict[str, Any]:
    best_path = RunLayout(cfg.output_dir).best_metrics
    return {
        "steps": progress.step,
        "epochs_started": progress.epoch + 1,
        "best_step": progress.best_step,
        "best_val_mean_dice": progress.best_dice,
        "best": json.loads(best_path.read_text()) if best_path.exists() else None,
        "val_curve": progress.val_curve,  # the learning curve; the loss curve is in the tracker
        "gate_curve": progress.gate_curve,  # [step, [tanh g per text gate]] at each evaluation; [] without text
        "last": last_eval.to_dict(catalogue) if last_eval else None,
        "final_train_loss": final_loss,  # mean over the last logging window; the full curve is in the tracker
        "train_seconds": round(elapsed, 2),
        "images_per_second": round(images_seen / elapsed, 3) if elapsed > 0 else None,
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "config": cfg.to_dict(),
    }
