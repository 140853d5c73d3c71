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


def test_temperature_scaling_finds_the_overconfidence_and_leaves_a_calibrated_predictor_alone():
    from mmseg_text.calibration import TEMPERATURES, scaled_probabilities, temperature_counts

    rng = np.random.default_rng(0)
    true_p = torch.from_numpy(rng.uniform(0.02, 0.98, (6, 2, 48, 48)).astype(np.float32))
    target = torch.from_numpy(rng.random((6, 2, 48, 48)) < true_p.numpy())
    # class 0 calibrated; class 1 over-confident: logit doubled (T = 2 undoes it)
    probs = torch.stack([true_p[:, 0], torch.sigmoid(2 * torch.logit(true_p[:, 1]))], 1)
    counts = temperature_counts(probs, target)
    assert counts.nll.shape == (6, 2, len(TEMPERATURES)) and counts.pixels.shape == (6, 2, len(TEMPERATURES), 10)
    fitted = counts.fitted()
    assert fitted[0] == pytest.approx(1.0) and fitted[1] == pytest.approx(2.0, rel=0.13)  # the grid's nearest
    summary = counts.summary(["calibrated", "overconfident"])
    assert summary["temperatures"]["calibrated"] == pytest.approx(1.0)
    assert summary["mean_ece_fitted"] < 0.5 * summary["mean_ece_t1"]
    assert summary["mean_ece_cross_fitted"] < 0.5 * summary["mean_ece_t1"]  # holds on images it was not fitted on
    assert summary["mean_foreground_ece_fitted"] < summary["mean_foreground_ece_t1"]
    # batches concatenate to the whole
    halves = counts.concat([temperature_counts(probs[:3], target[:3]), temperature_counts(probs[3:], target[3:])])
    torch.testing.assert_close(halves.nll, counts.nll)
    assert torch.equal(halves.hits, counts.hits)
    # T = 1 is the identity (up to the clip) and a per-class T broadcasts over the class axis
    torch.testing.assert_close(scaled_probabilities(true_p, 1.0), true_p.clamp(1e-6, 1 - 1e-6), atol=1e-6, rtol=0)
    both = scaled_probabilities(probs, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(both[:, 1], true_p[:, 1], atol=1e-5, rtol=0)
