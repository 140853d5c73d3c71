"""Competition Dice, thresholds, accumulation and threshold tuning, checked on values."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from mmseg_text import thresholds
from mmseg_text.metrics import SMOOTH, DiceAccumulator, dice_counts, dice_per_image, threshold_predictions
from mmseg_text.thresholds import DEFAULT_THRESHOLD_CANDIDATES, SweepCounts, threshold_sweep_counts, tune_thresholds


def random_masks(seed: int, shape=(4, 6, 16, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pred/target pairs with empty-empty, empty-target and empty-pred channels planted."""
    g = torch.Generator().manual_seed(seed)
    density = torch.rand(shape[:2], generator=g).view(*shape[:2], 1, 1)
    pred = torch.rand(shape, generator=g) < density
    target = torch.rand(shape, generator=g) < density
    pred[0, 0], target[0, 0] = False, False   # both empty
    target[1, 1] = False                      # empty target, non-empty prediction
    pred[2, 2] = False                        # empty prediction, non-empty target
    return pred, target


def test_dice_of_a_tiny_known_case():
    pred = torch.zeros(1, 1, 3, 4, dtype=torch.bool)
    target = torch.zeros_like(pred)
    pred[0, 0, 0, :2] = True            # 2 pixels
    target[0, 0, 0, 1:4] = True         # 3 pixels, 1 shared
    dice = dice_per_image(pred, target)
    assert dice.shape == (1, 1) and dice.dtype == torch.float64
    assert dice.item() == pytest.approx((2 * 1 + 1e-4) / (2 + 3 + 1e-4), abs=1e-15)
    intersection, pred_sum, target_sum = dice_counts(pred, target)
    assert (intersection.item(), pred_sum.item(), target_sum.item()) == (1, 2, 3)


def test_empty_cases_follow_the_smoothing():
    pred = torch.zeros(1, 3, 5, 5, dtype=torch.bool)
    target = torch.zeros_like(pred)
    pred[0, 1, :2] = True               # 10 predicted pixels on an empty class
    target[0, 2, :1] = True             # 5 missed pixels
    dice = dice_per_image(pred, target)[0]
    assert dice[0].item() == 1.0        # empty prediction of an empty class: exactly 1
    assert dice[1].item() == pytest.approx(1e-4 / (10 + 1e-4), abs=1e-15)
    assert dice[2].item() == pytest.approx(1e-4 / (5 + 1e-4), abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_agrees_with_monai(seed):
    pred, target = random_masks(seed)
    ours = dice_per_image(pred, target)
    monai_dice = DiceMetric(include_background=True, reduction="none")(pred.float(), target.float())
    # MONAI (ignore_empty=True) leaves empty targets undefined; compare wherever it is defined.
    defined = ~torch.isnan(monai_dice)
    assert defined.sum() == pred.shape[0] * pred.shape[1] - 2   # the two planted empty targets
    sums = (pred.sum((2, 3)) + target.sum((2, 3))).double()
    # Ours differs from 2I/S only by the smoothing: |ours - 2I/S| <= 1e-4 / S.
    diff = (ours - monai_dice.double()).abs()[defined]
    assert (diff <= SMOOTH / sums[defined] + 1e-7).all()
    assert ours[2, 2].item() == pytest.approx(1e-4 / (sums[2, 2].item() + 1e-4))  # MONAI: 0
    assert monai_dice[2, 2].item() == 0.0
    # Empty target: MONAI with ignore_empty=False gives 1 (empty pred) or 0; ours gives 1.0 or ~0.
    strict = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred.float(), target.float())
    assert strict[0, 0].item() == 1.0 and ours[0, 0].item() == 1.0
    assert strict[1, 1].item() == 0.0 and 0.0 < ours[1, 1].item() < 1e-4


def test_soft_dice_and_thresholded_probabilities():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 3, 8, 8, generator=g)
    target = torch.rand(2, 3, 8, 8, generator=g) > 0.5
    soft = dice_per_image(probs, target)
    expected = (2 * (probs.double() * target).sum((2, 3)) + 1e-4) / (probs.double().sum((2, 3)) + target.sum((2, 3)) + 1e-4)
    torch.testing.assert_close(soft, expected)
    hard = dice_per_image(probs, target, threshold=0.5)
    torch.testing.assert_close(hard, dice_per_image(probs > 0.5, target))
    # numpy inputs work the same
    torch.testing.assert_close(dice_per_image(probs.numpy() > 0.5, target.numpy()), hard)


def test_threshold_predictions_per_class_and_numpy():
    probs = torch.tensor([0.2, 0.5, 0.7]).view(1, 1, 1, 3).expand(1, 2, 1, 3).clone()
    mask = threshold_predictions(probs, [0.1, 0.6])
    assert mask.dtype == torch.bool
    assert mask[0, 0, 0].tolist() == [True, True, True]
    assert mask[0, 1, 0].tolist() == [False, False, True]
    assert threshold_predictions(probs, 0.5)[0, 0, 0].tolist() == [False, False, True]  # strictly greater
    as_numpy = threshold_predictions(probs[0].numpy(), np.array([0.1, 0.6]))        # (K, H, W)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.tolist() == mask[0].tolist()
    with pytest.raises(ValueError, match="one per class"):
        threshold_predictions(probs, [0.5, 0.5, 0.5])


def test_accumulator_means_groups_and_subsets():
    acc = DiceAccumulator(["a", "b", "c"])
    acc.add(torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.5, 1.0]]), image_ids=["x", "y"])
    acc.add(np.array([0.0, 0.2, 0.5]), image_ids=["z"])
    assert len(acc) == 3 and acc.rows.shape == (3, 3)
    np.testing.assert_allclose(acc.per_class(), [0.5, 0.4, 0.5])
    assert acc.mean() == pytest.approx(1.4 / 3)
    assert acc.grouped(["g1", "g1", "g2"]) == pytest.approx({"g1": 0.45, "g2": 0.5})
    assert list(acc.grouped(["g2", "g1", "g2"])) == ["g2", "g1"]
    bent = acc.subset(np.array([True, False, True]))
    np.testing.assert_allclose(bent.per_class(), [0.5, 0.35, 0.25])
    assert bent.image_ids == ["x", "z"]
    np.testing.assert_array_equal(acc.subset(torch.tensor([True, False, True])).rows, bent.rows)
    np.testing.assert_array_equal(acc.subset([2, 0]).rows, acc.rows[[2, 0]])
    np.testing.assert_allclose(acc.subset(["y"]).rows, [[0.5, 0.5, 1.0]])
    assert acc.per_image()["z"] == pytest.approx({"a": 0.0, "b": 0.2, "c": 0.5})
    summary = acc.summary(groups=["g1", "g1", "g2"])
    assert summary["num_images"] == 3 and summary["mean_dice"] == pytest.approx(1.4 / 3)
    assert summary["per_class"]["b"] == pytest.approx(0.4)


def test_accumulator_rejects_bad_rows():
    acc = DiceAccumulator(["a", "b"])
    with pytest.raises(ValueError, match="no Dice rows"):
        acc.mean()
    with pytest.raises(ValueError, match="3 classes, expected 2"):
        acc.add(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.array([[np.nan, 1.0]]))


def test_sweep_counts_match_explicit_thresholding(monkeypatch):
    # Quantised probabilities land exactly on candidates: `>` must be honoured at the boundaries.
    monkeypatch.setattr(thresholds, "_SWEEP_CHUNK_PIXELS", 100)  # force several chunks
    g = torch.Generator().manual_seed(4)
    probs = (torch.randint(0, 21, (3, 4, 9, 7), generator=g) / 20.0).float()
    target = torch.rand(3, 4, 9, 7, generator=g) > 0.6
    counts = threshold_sweep_counts(probs, target)
    assert counts.intersection.shape == (3, 4, 17) and counts.target_sum.shape == (3, 4)
    for j, t in enumerate(DEFAULT_THRESHOLD_CANDIDATES):
        inter, pred_sum, target_sum = dice_counts(threshold_predictions(probs, float(t)), target)
        assert torch.equal(counts.intersection[..., j], inter)
        assert torch.equal(counts.pred_sum[..., j], pred_sum)
        assert torch.equal(counts.target_sum, target_sum)
        torch.testing.assert_close(counts.dice()[..., j], dice_per_image(probs, target, threshold=float(t)))


def test_tune_thresholds_recovers_the_best_threshold():
    candidates = DEFAULT_THRESHOLD_CANDIDATES
    best = {0: candidates[4], 1: candidates[12]}  # 0.30 and 0.70
    g = torch.Generator().manual_seed(5)

    def batches():  # a stream of batches: tuning never holds more than one in memory
        for _ in range(3):
            probs = torch.rand(2, 3, 24, 24, generator=g)
            probs[:, 2] *= 0.05                 # class 2: empty everywhere and predicted below every candidate
            target = torch.zeros_like(probs, dtype=torch.bool)
            for k, t in best.items():
                target[:, k] = probs[:, k] > torch.tensor(t, dtype=probs.dtype)
            yield probs, target

    data = list(batches())
    thresholds = tune_thresholds((p for p, _ in data), (t for _, t in data))
    np.testing.assert_array_equal(thresholds, [best[0], best[1], 0.5])  # class 2: all tie -> nearest 0.5
    counts = SweepCounts.concat([threshold_sweep_counts(p, t) for p, t in data])
    assert len(counts) == 6
    np.testing.assert_array_equal(tune_thresholds(counts), thresholds)
    curve = counts.mean_dice()
    assert curve[0, 4] == 1.0 and curve[1, 12] == 1.0
    assert np.all(np.delete(curve[0], 4) < 1.0) and np.all(np.delete(curve[1], 12) < 1.0)
    # tuned thresholds score at least as well as 0.5 on the same data
    stacked_p = torch.cat([p for p, _ in data])
    stacked_t = torch.cat([t for _, t in data])
    tuned = dice_per_image(stacked_p, stacked_t, threshold=thresholds).mean(0)
    default = dice_per_image(stacked_p, stacked_t, threshold=0.5).mean(0)
    assert (tuned >= default).all() and tuned[0] == 1.0 and default[0] < 1.0


def test_tune_thresholds_input_errors():
    probs = torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match="targets are required"):
        tune_thresholds(probs)
    with pytest.raises(ValueError, match="different numbers of batches"):
        tune_thresholds([probs, probs], [probs > 0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        threshold_sweep_counts(probs, probs > 0.5, candidates=[0.5, 0.4])
