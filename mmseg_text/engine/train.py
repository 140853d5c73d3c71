"""The Accelerate training loop: ``train(cfg)``; ``scripts/train.py`` is a thin shell over it.

Order as in the Accelerate examples: Accelerator -> seed -> data -> text -> model -> optimizer ->
scheduler -> one ``prepare``. Gradient accumulation goes through ``accelerator.accumulate``;
validation rows are collected with ``gather_for_metrics``; state is saved with ``save_state``
(atomically, see checkpointing.py) and resumed with ``load_state`` + ``skip_first_batches``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.config import Config, resolve, to_yaml
from mmseg_text.data.dataset import build_datasets, collate
from mmseg_text.engine.cpu_memory import keep_freed_memory
from mmseg_text.engine.checkpointing import (read_trainer_state, resolve_resume, save_training_state)
from mmseg_text.engine.evaluate import EvalResult, evaluate
from mmseg_text.engine.losses import BCEDiceLoss
from mmseg_text.engine.text_setup import build_text_side
from mmseg_text.io import atomic_write_json, atomic_write_text
from mmseg_text.models import build_model, save_checkpoint

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


def _make_accelerator(cfg: Config) -> Accelerator:
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,  # None -> accelerate config / launch flag
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=str(Path(cfg.output_dir) / "logs")),
        # Seedable sampler: the shuffle order of epoch e depends only on (seed, e), so a resumed
        # run and a DDP run see the same samples as an uninterrupted single-process run.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed),
    )


def _loaders(cfg: Config, train_ds, val_ds) -> tuple[DataLoader, DataLoader]:
    workers = cfg.data.num_workers
    common = dict(collate_fn=collate, num_workers=workers, persistent_workers=False, pin_memory=torch.cuda.is_available())
    train_loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True, **common)
    val_loader = DataLoader(val_ds, batch_size=cfg.train.batch_size, shuffle=False, **common)
    return train_loader, val_loader


def _hparams(cfg: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for k, v in values.items():
                if isinstance(v, (int, float, str, bool)):
                    flat[f"{section}.{k}"] = v
        elif isinstance(values, (int, float, str, bool)):
            flat[section] = values
    return flat


def train(cfg: Config, *, resume: Optional[str] = None) -> dict[str, Any]:
    """Train, validate, checkpoint; returns (and writes) ``output_dir/summary.json``."""
    cfg = resolve(cfg)
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg)
    if accelerator.device.type == "cpu" and keep_freed_memory():
        logger.info("CPU training: freed memory is kept in the process (glibc mallopt)")
    set_seed(cfg.train.seed)
    catalogue = load_catalogue(cfg.data.classes)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", to_yaml(cfg))

    with accelerator.main_process_first():  # the main process builds the caches, the others read them
        train_ds, val_ds = build_datasets(cfg, catalogue, progress=accelerator.is_local_main_process)
        text = build_text_side(cfg, catalogue, progress=accelerator.is_local_main_process)
        if text is not None:
            text.attach(train_ds, val_ds)  # captions for every image, encoded once
    train_ds.augment_seed = cfg.train.seed  # per-sample augmentation seeds: resume and DDP reproduce it
    _report_skipped(accelerator, train_ds, val_ds, out)

    model = build_model(cfg.model, num_classes=len(catalogue), text_dim=text.width if text else None,
                        image_size=cfg.data.image_size, in_chans=cfg.data.in_chans)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train_loader, val_loader = _loaders(cfg, train_ds, val_ds)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)

    # Accelerate also syncs at the end of the loader, so a short last window is a step too.
    steps_per_epoch = max(1, math.ceil(len(train_loader) / cfg.train.grad_accum))
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    # The prepared scheduler advances once per process at each optimizer step.
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=cfg.train.warmup_steps * accelerator.num_processes,
                                                num_training_steps=total_steps * accelerator.num_processes)
    scheduler = accelerator.prepare(scheduler)
    loss_fn = BCEDiceLoss(cfg.train.bce_weight, cfg.train.dice_weight)

    progress = _Progress()
    checkpoint = resolve_resume(cfg.output_dir, resume)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        progress = _Progress(**read_trainer_state(checkpoint)["progress"])
        accelerator.print(f"resumed from {checkpoint} at step {progress.step}")

    accelerator.init_trackers("train", config=_hparams(cfg))
    eval_every = cfg.train.eval_every or steps_per_epoch
    losses: list[float] = []  # per optimizer step, this process's run (after a resume: from there on)
    window: list[float] = []
    started = time.perf_counter()
    images_seen = 0
    bar = tqdm(total=total_steps, initial=progress.step, desc="train", disable=not accelerator.is_local_main_process)
    last_eval: Optional[EvalResult] = None
    model.train()
    while progress.step < total_steps:
        train_loader.set_epoch(progress.epoch)  # the seedable sampler's shuffle order
        train_ds.set_epoch(progress.epoch)  # the augmentation seeds (workers copy the dataset per epoch)
        batches = train_loader
        if progress.batches_in_epoch:
            batches = accelerator.skip_first_batches(train_loader, progress.batches_in_epoch)
        for batch in batches:
            progress.batches_in_epoch += 1
            with accelerator.accumulate(model):
                context = text.context(batch, accelerator.device) if text else None
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
            losses.append(sum(window) / len(window))  # mean over the accumulated micro-batches
            window.clear()
            progress.step += 1
            bar.update(1)
            if progress.step % cfg.train.log_every == 0 or progress.step == total_steps:
                recent = losses[-cfg.train.log_every:]
                accelerator.log({"train/loss": sum(recent) / len(recent), "train/lr": scheduler.get_last_lr()[0]}, step=progress.step)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if progress.step % eval_every == 0 or progress.step == total_steps:
                last_eval = _validate(accelerator, model, val_loader, text, catalogue, cfg, progress)
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
    summary = _summary(cfg, catalogue, progress, last_eval, losses, elapsed, images_seen, accelerator)
    if accelerator.is_main_process:
        atomic_write_json(out / "summary.json", summary)
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


def _save_state(accelerator: Accelerator, cfg: Config, progress: _Progress) -> Path:
    state = {"progress": progress.__dict__.copy()}
    return save_training_state(accelerator, cfg.output_dir, progress.step, state, keep=cfg.train.keep_checkpoints)


def _validate(accelerator, model, val_loader, text, catalogue: ClassCatalogue, cfg: Config, progress: _Progress) -> EvalResult:
    result = evaluate(model, val_loader, accelerator, catalogue, text=text, tune_thresholds=cfg.train.tune_thresholds,
                      channels_last=cfg.train.channels_last)
    accelerator.log({"val/dice": result.mean_dice, **{f"val/dice_{g}": v for g, v in result.grouped.items()}}, step=progress.step)
    accelerator.print(f"step {progress.step}: val mean Dice {result.mean_dice:.4f}")
    if result.mean_dice > progress.best_dice:
        progress.best_dice, progress.best_step = result.mean_dice, progress.step
        if accelerator.is_main_process:
            extra = {"thresholds.json": {"classes": list(catalogue.names), "thresholds": result.thresholds},
                     "val_metrics.json": result.to_dict(catalogue)}
            save_checkpoint(Path(cfg.output_dir) / "best", accelerator.unwrap_model(model), cfg.to_dict(), extra=extra)
    accelerator.wait_for_everyone()
    return result


def _report_skipped(accelerator: Accelerator, train_ds, val_ds, out: Path) -> None:
    skipped = list(getattr(train_ds, "skipped", [])) + list(getattr(val_ds, "skipped", []))
    if skipped and accelerator.is_main_process:
        lines = [f"{path}\t{reason}" for path, reason in skipped]
        atomic_write_text(out / "skipped_samples.tsv", "\n".join(lines) + "\n")
        logger.warning("skipped %d bad samples (listed in %s)", len(skipped), out / "skipped_samples.tsv")


def _summary(cfg: Config, catalogue: ClassCatalogue, progress: _Progress, last_eval: Optional[EvalResult],
             losses: list[float], elapsed: float, images_seen: int, accelerator: Accelerator) -> dict[str, Any]:
    best_metrics = None
    best_dir = Path(cfg.output_dir) / "best" / "val_metrics.json"
    if best_dir.exists():
        best_metrics = json.loads(best_dir.read_text())
    return {
        "steps": progress.step,
        "epochs_started": progress.epoch + 1,
        "best_step": progress.best_step,
        "best_val_mean_dice": progress.best_dice,
        "best": best_metrics,
        "last": last_eval.to_dict(catalogue) if last_eval else None,
        "final_train_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "loss_history": losses,
        "train_seconds": round(elapsed, 2),
        "images_per_second": round(images_seen / elapsed, 3) if elapsed > 0 else None,
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "config": cfg.to_dict(),
    }
