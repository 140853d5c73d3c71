"""train.loss: BCE + Dice (default) and MONAI's Dice + focal, both per image and in fp32."""
from __future__ import annotations

import pytest
import torch
from monai.losses import DiceFocalLoss

from mmseg_text.config import ConfigError, load_config
from mmseg_text.training.losses import BCEDiceLoss, DiceFocalLossFP32, build_loss


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


def test_crops_turn_to_batch_dice_so_a_bone_absent_from_one_crop_is_not_a_total_loss():
    cfg = load_config(None).train
    per_image, on_crops = build_loss(cfg), build_loss(cfg, crops=True)
    assert per_image.dice.batch is False and on_crops.dice.batch is True
    assert build_loss(load_config(None, ["train.batch_dice=false"]).train, crops=True).dice.batch is False
    assert build_loss(load_config(None, ["train.loss=dice_focal"]).train, crops=True).loss.dice.batch is True
    # crop 0 shows class 0, crop 1 lacks it; the model predicts class 0 right in crop 0 and a little in crop 1
    targets = torch.zeros(2, 1, 8, 8)
    targets[0, 0, :4] = 1
    logits = torch.full((2, 1, 8, 8), -8.0)
    logits[0, 0, :4] = 8.0
    logits[1, 0, 0, 0] = 8.0  # one stray pixel in the crop without the bone
    image_dice = BCEDiceLoss(bce_weight=0.0)(logits, targets).item()
    batch_dice = BCEDiceLoss(bce_weight=0.0, batch=True)(logits, targets).item()
    assert image_dice == pytest.approx(0.5, abs=0.01)  # the absent bone's crop scores Dice ~0 for one pixel
    assert batch_dice == pytest.approx(1 - 64 / 65, abs=0.01)  # over the batch: 32 right pixels, one wrong
