"""Losses for multi-label masks, chosen by ``train.loss``: BCE + soft Dice, or soft Dice + focal (MONAI).

The Dice term is computed per image and per class, then averaged (MONAI ``batch=False``), so the
loss is a mean over samples: averaging it over DDP ranks equals the single-process loss of the
same global batch, and it optimises the quantity the competition scores (per-image Dice).
Training on crops (``data.crop_size``) turns to batch Dice (``train.batch_dice``, MONAI ``batch=True``, as
nnU-Net does for patches): a crop shows a few of the bones, and the per-image Dice of a bone it lacks is ~0
for any predicted pixel of it, which drives every prediction toward empty.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from monai.losses import DiceFocalLoss, DiceLoss
from torch import nn

from mmseg_text.choices import lookup


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits + dice_weight * (1 - soft Dice)``; logits and targets are (B, K, H, W)."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, batch: bool = False):
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.bce = nn.BCEWithLogitsLoss()
        self.dice = DiceLoss(sigmoid=True, batch=batch, smooth_nr=1e-4, smooth_dr=1e-4)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss is computed in fp32 also under autocast
        loss = logits.new_zeros(())
        if self.bce_weight:
            loss = loss + self.bce_weight * self.bce(logits, targets)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, targets)
        return loss


class DiceFocalLossFP32(nn.Module):
    """MONAI's ``DiceFocalLoss`` (sigmoid, per-image or batch Dice, focal gamma 2) computed in fp32."""

    def __init__(self, dice_weight: float = 1.0, focal_weight: float = 1.0, batch: bool = False):
        super().__init__()
        self.loss = DiceFocalLoss(sigmoid=True, batch=batch, smooth_nr=1e-4, smooth_dr=1e-4, gamma=2.0,
                                  lambda_dice=dice_weight, lambda_focal=focal_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), targets)


# train.loss -> factory (train config, batch Dice?) -> loss module; the names are choices.LOSSES.
LOSS_REGISTRY: Mapping[str, Callable[..., nn.Module]] = {
    "bce_dice": lambda train_cfg, batch: BCEDiceLoss(train_cfg.bce_weight, train_cfg.dice_weight, batch=batch),
    "dice_focal": lambda train_cfg, batch: DiceFocalLossFP32(train_cfg.dice_weight, train_cfg.focal_weight, batch=batch),
}


def build_loss(train_cfg, *, crops: bool = False) -> nn.Module:
    """``train.loss``; ``crops``: the model trains on crops (batch Dice unless ``train.batch_dice`` says otherwise).
    An unknown name is an error naming the key (never a fall-back to another loss)."""
    batch = crops if train_cfg.batch_dice is None else bool(train_cfg.batch_dice)
    return lookup(LOSS_REGISTRY, "train.loss", train_cfg.loss)(train_cfg, batch)
