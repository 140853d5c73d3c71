"""Connected-component post-processing: the rule itself, its counts in the threshold sweep, the per-class choice
(kept only where it raises held-out Dice), and its application to packed masks at prediction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmseg_text.inference.tiling import PackedMasks
from mmseg_text.metrics import dice_per_image
from mmseg_text.postprocess import PostProcessed, apply_rule, keep_largest_component, postprocessed
from mmseg_text.thresholds import SweepCounts, best_thresholds_and_rules, load_sweep, save_sweep, threshold_sweep_counts


def _two_blobs(shape=(32, 32)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[2:12, 2:12] = True  # 100 px
    mask[20:24, 20:24] = True  # 16 px
    return mask


def test_keep_largest_component_keeps_the_larger_blob_and_leaves_empty_or_single_masks():
    mask = _two_blobs()
    kept = keep_largest_component(mask)
    assert kept.sum() == 100 and kept[5, 5] and not kept[21, 21]
    assert not keep_largest_component(np.zeros((8, 8), bool)).any()
    diagonal = np.eye(6, dtype=bool)  # 8-connected: one component
    np.testing.assert_array_equal(keep_largest_component(diagonal), diagonal)
    np.testing.assert_array_equal(apply_rule(mask, "none"), mask)
    with pytest.raises(ValueError, match="unknown post-processing rule 'biggest'"):
        apply_rule(mask, "biggest")


def test_the_sweep_counts_of_the_largest_component_match_explicit_post_processing():
    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.random((2, 3, 24, 24)).astype(np.float32))
    target = torch.from_numpy(rng.random((2, 3, 24, 24)) > 0.6)
    counts = threshold_sweep_counts(probs, target, components=True)
    for b, k in np.ndindex(2, 3):
        for j, cut in enumerate(counts.candidates):
            kept = keep_largest_component(probs[b, k].numpy() > np.float32(cut))
            assert counts.largest_pred_sum[b, k, j] == kept.sum()
            assert counts.largest_intersection[b, k, j] == (kept & target[b, k].numpy()).sum()
    plain = threshold_sweep_counts(probs, target)
    assert not plain.has_components
    assert torch.equal(plain.pred_sum, counts.pred_sum)  # the plain counts do not change


def _sweep_of(pred_masks: list[np.ndarray], targets: list[np.ndarray]) -> SweepCounts:
    probs = torch.from_numpy(np.stack(pred_masks)[:, None].astype(np.float32) * 0.9)
    return threshold_sweep_counts(probs, torch.from_numpy(np.stack(targets)[:, None]), components=True)


def test_largest_is_chosen_only_where_it_raises_held_out_dice(tmp_path):
    pred = _two_blobs()
    stray_target = np.zeros_like(pred)
    stray_target[2:12, 2:12] = True  # the small blob is a false positive: largest wins
    counts = _sweep_of([pred, pred], [stray_target, stray_target])
    thresholds, rules, dice = best_thresholds_and_rules(counts)
    assert rules == ["largest"] and dice[0] == pytest.approx(1.0, abs=1e-3)
    both = _two_blobs()  # the small blob is real: the rule would lose it and is not chosen
    thresholds, rules, dice = best_thresholds_and_rules(_sweep_of([pred, pred], [both, both]))
    assert rules == ["none"] and dice[0] == pytest.approx(1.0, abs=1e-3)
    # the counts survive the out-of-fold round trip (save, load, concatenate)
    save_sweep(tmp_path / "oof.npz", counts)
    again = SweepCounts.concat([load_sweep(tmp_path / "oof.npz"), counts])
    assert again.has_components and len(again) == 4
    assert best_thresholds_and_rules(again)[1] == ["largest"]
    dropped = SweepCounts.concat([again, threshold_sweep_counts(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))])
    assert not dropped.has_components and best_thresholds_and_rules(dropped)[1] == ["none"]


def test_post_processed_packed_masks_equal_post_processed_arrays():
    masks = np.stack([_two_blobs(), _two_blobs(), np.zeros((32, 32), bool)])
    packed = PackedMasks(np.packbits(masks, axis=-1), 32)
    rules = ["largest", "none", "largest"]
    expected = np.stack([keep_largest_component(masks[0]), masks[1], masks[2]])
    np.testing.assert_array_equal(np.asarray(PostProcessed(packed, rules)), expected)
    np.testing.assert_array_equal(np.asarray(PostProcessed(masks, rules)), expected)
    assert postprocessed(packed, ["none"] * 3) is packed  # nothing to do: the masks as they are
    truth = torch.from_numpy(expected[None])
    assert dice_per_image(torch.from_numpy(np.asarray(PostProcessed(masks, rules))[None]), truth).min() == 1.0
    with pytest.raises(ValueError, match="2 post-processing rules for 3 classes"):
        PostProcessed(masks, rules[:2])


def test_every_rule_a_config_may_name_is_implemented():
    from mmseg_text.choices import POSTPROCESS_RULES

    mask = _two_blobs()
    assert {rule: int(apply_rule(mask, rule).sum()) for rule in POSTPROCESS_RULES} == {"none": 116, "largest": 100}
