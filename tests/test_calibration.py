"""Calibration counts: ECE of a known case, of a calibrated and an overconfident predictor, exact concatenation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmseg_text.calibration import CalibrationCounts, calibration_counts, reliability_chart


def test_ece_of_a_small_known_case():
    probs = torch.tensor([0.05, 0.05, 0.95, 0.95]).view(1, 1, 2, 2)
    target = torch.tensor([0, 1, 1, 1]).view(1, 1, 2, 2).bool()
    counts = calibration_counts(probs, target)
    # bin 0: mean 0.05, rate 0.5 (half the pixels); bin 9: mean 0.95, rate 1.0
    assert counts.ece()[0] == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    assert counts.foreground_ece()[0] == pytest.approx(0.05)  # bin 0 left out
    confidence, frequency, n = counts.reliability()
    assert n[0].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2] and np.isnan(confidence[0, 4])


def test_a_calibrated_predictor_has_ece_near_zero_and_an_overconfident_one_does_not():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 3, 64, 64, generator=gen)
    calibrated = torch.rand(4, 3, 64, 64, generator=gen) < probs  # foreground with probability p
    assert calibration_counts(probs, calibrated).ece().max() < 0.01
    sharpened = torch.where(probs > 0.5, 1 - (1 - probs) ** 4, probs ** 4)  # says 0.99 where the truth is 0.8
    assert calibration_counts(sharpened, calibrated).ece().min() > 0.1


def test_counts_of_batches_concatenate_to_the_counts_of_the_whole(tmp_path):
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(6, 2, 16, 16, generator=gen)
    target = torch.rand(6, 2, 16, 16, generator=gen) > 0.7
    whole = calibration_counts(probs, target)
    parts = CalibrationCounts.concat([calibration_counts(probs[:2], target[:2]), calibration_counts(probs[2:], target[2:])])
    assert torch.equal(parts.pixels, whole.pixels) and torch.equal(parts.hits, whole.hits)
    torch.testing.assert_close(parts.prob_sum, whole.prob_sum)
    summary = whole.summary(["a", "b"])
    assert sum(summary["reliability"]["pixels"]) == 6 * 2 * 16 * 16
    assert summary["mean_ece"] == pytest.approx(float(whole.ece().mean()))
    assert reliability_chart(summary, tmp_path / "r.png", "test").stat().st_size > 1000
    with pytest.raises(TypeError, match="floating point"):
        calibration_counts(target, target)
