"""BCE + soft Dice for multi-label masks.

The Dice term is computed per image and per class, then averaged (MONAI ``batch=False``), so the
loss is a mean over samples: averaging it over DDP ranks equals the single-process loss of the
same global batch, and it optimises the quantity the competition scores (per-image Dice).
"""
from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits + dice_weight * (1 - soft Dice)``; logits and targets are (B, K, H, W)."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0):
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.bce = nn.BCEWithLogitsLoss()
        self.dice = DiceLoss(sigmoid=True, batch=False, smooth_nr=1e-4, smooth_dr=1e-4)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss is computed in fp32 also under autocast
        loss = logits.new_zeros(())
        if self.bce_weight:
            loss = loss + self.bce_weight * self.bce(logits, targets)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, targets)
        return loss
