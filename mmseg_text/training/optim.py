"""Optimizer and learning-rate schedule of a run.

AdamW with timm's ``param_groups_weight_decay`` rule (open_clip's too): every parameter of one dimension
or less (biases, norm scales, the zero-initialised text gates, the prior-probability head bias) and every
``*.bias`` gets no weight decay. Decaying the gates would pull every text path back toward "off" and bias
the text ablation against text.

``train.text_lr_scale`` gives the text-reading modules (``models.text_parameters``) their own learning rate,
``lr * scale``, in both decay groups: whether a text path learns too slowly (or upsets the image path) is tested by it.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.optim import param_groups_weight_decay
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from mmseg_text.models import text_parameters


def build_optimizer(model: nn.Module, train_cfg: Any) -> torch.optim.Optimizer:
    groups = param_groups_weight_decay(model, weight_decay=train_cfg.weight_decay)
    scale = float(getattr(train_cfg, "text_lr_scale", 1.0))
    if scale != 1.0:
        text = {id(p) for p in text_parameters(model)}
        groups = [{**group, "params": params, **({"lr": train_cfg.lr * scale} if is_text else {})}
                  for group in groups for is_text in (False, True)
                  if (params := [p for p in group["params"] if (id(p) in text) == is_text])]
    return torch.optim.AdamW(groups, lr=train_cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: Any, *, total_steps: int, num_processes: int):
    """Linear warm-up then cosine decay. A scheduler prepared by Accelerate advances once per process at
    each optimizer step, hence the step counts multiplied by the number of processes."""
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=train_cfg.warmup_steps * num_processes,
                                           num_training_steps=total_steps * num_processes)
