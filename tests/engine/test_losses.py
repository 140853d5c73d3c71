"""train.loss: BCE + Dice (default) and MONAI's Dice + focal, both per image and in fp32."""
from __future__ import annotations

import pytest
import torch
from monai.losses import DiceFocalLoss

from mmseg_text.config import ConfigError, load_config
from mmseg_text.engine.losses import BCEDiceLoss, DiceFocalLossFP32, build_loss


def test_build_loss_follows_the_config_and_values_match_monai():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 16, 16), (torch.rand(2, 3, 16, 16) > 0.7).float()
    default = build_loss(load_config(None).train)
    assert isinstance(default, BCEDiceLoss)
    focal = build_loss(load_config(None, ["train.loss=dice_focal", "train.focal_weight=2.0"]).train)
    assert isinstance(focal, DiceFocalLossFP32)
    reference = DiceFocalLoss(sigmoid=True, batch=False, smooth_nr=1e-4, smooth_dr=1e-4, gamma=2.0, lambda_focal=2.0)
    torch.testing.assert_close(focal(logits.half(), targets), reference(logits.half().float(), targets))
    assert focal(logits, targets).item() != pytest.approx(default(logits, targets).item())
    with pytest.raises(ConfigError, match=r"'train.loss' must be one of \['bce_dice', 'dice_focal'\]"):
        load_config(None, ["train.loss=focal"])
