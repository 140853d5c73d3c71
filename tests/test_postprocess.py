"""Connected-component post-processing: the rules themselves (largest component, small objects dropped), their
counts in the threshold sweep, the per-class choice (kept only where it raises held-out Dice), and their application
to packed masks at prediction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmseg_text.inference.tiling import PackedMasks
from mmseg_text.metrics import dice_per_image
from mmseg_text.postprocess import (Claims, PostProcessed, apply_rule, check_rules, keep_largest_component,
                                    postprocessed)
from mmseg_text.thresholds import (TUNED_RULES, SweepCounts, best_thresholds_and_rules, load_sweep, save_sweep,
                                   threshold_sweep_counts)


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


def test_min_area_drops_the_objects_below_its_fraction_of_the_image_and_keeps_the_rest():
    mask = _two_blobs()  # 100 px and 16 px in 1024 px
    mask[30, 30] = True  # a 1 px speck
    assert apply_rule(mask, "min_area:0.01").sum() == 116  # 10.24 px: the speck goes, both blobs stay
    assert apply_rule(mask, "min_area:0.02").sum() == 100  # 20.48 px: the 16 px blob goes too
    assert apply_rule(mask, "min_area:0.5").sum() == 0  # nothing is large enough: an empty mask, not an error
    assert apply_rule(mask, "largest").sum() == 100
    with pytest.raises(ValueError, match="min_area takes a fraction of the image area in"):
        apply_rule(mask, "min_area:2")
    with pytest.raises(ValueError, match=r"unknown post-processing rule\(s\) \['min_area:x'\]"):
        check_rules(["none", "min_area:x"], 2, "thresholds.json")
    assert check_rules(["min_area:0.003", "largest"], 2, "thresholds.json") == ["min_area:0.003", "largest"]


def test_the_sweep_counts_of_every_rule_match_explicit_post_processing():
    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.random((2, 3, 24, 24)).astype(np.float32))
    target = torch.from_numpy(rng.random((2, 3, 24, 24)) > 0.6)
    rules = ("largest", "min_area:0.005", "min_area:0.05", "exclusive")
    counts = threshold_sweep_counts(probs, target, components=True, rules=rules)
    assert counts.rules == rules and counts.rule_pred_sum.shape == (2, 4, 3, len(counts.candidates))
    changed = 0
    for b, k in np.ndindex(2, 3):
        at_half = probs[b].numpy() > np.float32(0.5)
        claimed = np.delete(at_half, k, axis=0).any(0)  # what the other classes hold at 0.5
        np.testing.assert_array_equal(Claims.of(at_half).by_others(k), claimed)
        for j, cut in enumerate(counts.candidates):
            mask = probs[b, k].numpy() > np.float32(cut)
            for r, rule in enumerate(rules):
                kept = apply_rule(mask, rule, claimed=claimed)
                assert counts.rule_pred_sum[b, r, k, j] == kept.sum()
                assert counts.rule_intersection[b, r, k, j] == (kept & target[b, k].numpy()).sum()
                changed += int(kept.sum() != mask.sum())
    assert changed > 50  # the rules did remove pixels: the comparison is not of unchanged masks
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
    assert again.has_components and len(again) == 4 and again.rules == TUNED_RULES
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


def test_a_small_object_rule_is_chosen_where_the_stray_blob_is_a_speck_and_the_real_one_is_split():
    """A bone predicted in two real pieces plus a speck: "largest" would lose a piece, "min_area" drops the speck."""
    pred = np.zeros((64, 64), bool)
    pred[2:20, 2:20] = True  # 324 px, real
    pred[30:40, 30:40] = True  # 100 px, real (the same bone, split)
    pred[60, 60] = True  # 1 px speck: a false positive
    truth = pred.copy()
    truth[60, 60] = False
    counts = _sweep_of([pred, pred], [truth, truth])
    assert counts.rules == TUNED_RULES
    thresholds, rules, dice = best_thresholds_and_rules(counts)
    assert rules[0].startswith("min_area:") and dice[0] == pytest.approx(1.0, abs=1e-3)
    assert apply_rule(pred, rules[0]).sum() == 424


def test_every_rule_a_config_may_name_is_implemented():
    from mmseg_text.choices import POSTPROCESS_RULES

    mask = _two_blobs()
    assert {rule: int(apply_rule(mask, rule).sum()) for rule in POSTPROCESS_RULES} == {
        "none": 116, "largest": 100, "min_area:0.0001": 116, "min_area:0.0005": 116, "min_area:0.002": 116,
        "attached": 116, "exclusive": 100}  # with no attached bone given, "attached" keeps every component; with
    # nothing claimed, "exclusive" is "largest"
    assert int(apply_rule(mask, "min_area:0.02").sum()) == 100


def _three_tips() -> tuple[np.ndarray, np.ndarray]:
    """One label painted on three look-alike fingertips (64 x 64), and the phalanx below the middle one."""
    tips = np.zeros((64, 64), bool)
    for x in (10, 30, 50):
        tips[5:12, x - 3:x + 3] = True  # 42 px each
    phalanx = np.zeros((64, 64), bool)
    phalanx[12:30, 27:33] = True  # right below the middle tip
    return tips, phalanx


def test_attached_keeps_the_components_that_touch_the_attached_bone():
    from mmseg_text.postprocess import near

    tips, phalanx = _three_tips()
    kept = apply_rule(tips, "attached", near(phalanx))
    assert kept.sum() == 42 and kept[8, 30] and not kept[8, 10] and not kept[8, 50]
    np.testing.assert_array_equal(apply_rule(tips, "attached"), tips)  # no attached bone: all kept
    far = np.zeros_like(tips)
    far[60:, 60:] = True
    np.testing.assert_array_equal(apply_rule(tips, "attached", near(far)), tips)  # nothing touches it: all kept


def test_post_processed_applies_the_attached_bones_own_rule_first():
    tips, phalanx = _three_tips()
    stray = phalanx.copy()
    stray[1:5, 8:12] = True  # a speck of the phalanx class next to the left tip: its "largest" rule removes it
    masks = np.stack([tips, stray])
    rules = ["attached", "largest"]
    out = np.asarray(PostProcessed(masks, rules, attached_to=[1, None]))
    np.testing.assert_array_equal(out[1], phalanx)
    assert out[0].sum() == 42 and out[0][8, 30]  # the left tip touched only the removed speck: gone too
    unprocessed_parent = np.asarray(PostProcessed(masks, ["attached", "none"], attached_to=[1, None]))
    assert unprocessed_parent[0].sum() == 84  # with the speck kept, the left tip touches it and stays
    with pytest.raises(ValueError, match="attached_to has 1 entries for 2 classes"):
        PostProcessed(masks, rules, attached_to=[None])


def test_the_sweep_counts_attached_and_choose_it_for_a_fingertip_painted_on_three_fingers():
    from mmseg_text.postprocess import near

    tips, phalanx = _three_tips()
    truth_tip = np.zeros_like(tips)
    truth_tip[5:12, 27:33] = True
    probs = torch.from_numpy(np.stack([np.stack([tips, phalanx])] * 2).astype(np.float32) * 0.9)
    target = torch.from_numpy(np.stack([np.stack([truth_tip, phalanx])] * 2))
    counts = threshold_sweep_counts(probs, target, components=True, attached_to=[1, None])
    r = counts.rules.index("attached")
    kept = apply_rule(tips, "attached", near(phalanx))
    below = counts.candidates < 0.9  # the masks are probs 0.9: empty at the last candidate
    assert (counts.rule_pred_sum[:, r, 0, below] == int(kept.sum())).all()
    assert (counts.rule_intersection[:, r, 0, below] == int((kept & truth_tip).sum())).all()
    thresholds, rules, dice = best_thresholds_and_rules(counts)
    assert rules == ["attached", "none"] and dice[0] == pytest.approx(1.0, abs=1e-3)
    # without the catalogue's attachments the rule has nothing to go by, and "none" stays (the tie is not a gain)
    plain = best_thresholds_and_rules(threshold_sweep_counts(probs, target, components=True))
    assert plain[1][0] != "attached"


def test_the_catalogue_declares_attachments_and_rejects_unknown_or_circular_ones(tmp_path):
    from mmseg_text.catalogue import load_catalogue

    cat = load_catalogue()
    named = {cat.names[k]: cat.names[a] for k, a in enumerate(cat.attached_to) if a is not None}
    assert named["finger-4"] == "finger-5" and named["finger-7"] == "Trapezoid" and named["Scaphoid"] == "Radius"
    assert "Radius" not in named and len(named) == 22
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  - {name: a, attached_to: b}\n  - {name: b, attached_to: a}\n")
    with pytest.raises(ValueError, match="attached_to makes a cycle through a"):
        load_catalogue(bad)
    bad.write_text("classes:\n  - {name: a, attached_to: z}\n")
    with pytest.raises(ValueError, match="a: attached_to 'z' must name another class"):
        load_catalogue(bad)


def test_near_inside_the_bounding_box_equals_the_whole_image_filter():
    from scipy import ndimage

    from mmseg_text.postprocess import ATTACH_RADIUS, near

    rng = np.random.default_rng(0)
    for shape in [(64, 64), (300, 200), (37, 515)]:
        mask = np.zeros(shape, bool)
        mask[rng.integers(0, shape[0], 4), rng.integers(0, shape[1], 4)] = True
        mask[-1, 0] = True  # a pixel on the border: the box is clipped there
        radius = max(1, int(np.ceil(ATTACH_RADIUS * max(shape))))
        whole = ndimage.maximum_filter(mask.astype(np.uint8), size=2 * radius + 1, mode="constant") > 0
        np.testing.assert_array_equal(near(mask), whole)
        assert near(mask).sum() > mask.sum()
    assert not near(np.zeros((16, 16), bool)).any()


def _scaphoid_over_lunate() -> tuple[np.ndarray, np.ndarray]:
    """(2, 32, 32) probabilities: class 0 painted over its own bone and its neighbour's (0.9 on both), class 1 right
    on the neighbour (0.8); and the true masks."""
    truth = np.zeros((2, 32, 32), bool)
    truth[0, 8:20, 2:12] = True  # 120 px
    truth[1, 8:20, 12:22] = True  # 120 px, touching class 0's bone
    probs = np.full((2, 32, 32), 0.02, np.float32)
    probs[0][truth[0] | truth[1]] = 0.9
    probs[1][truth[1]] = 0.8
    return probs, truth


def test_exclusive_gives_the_neighbour_its_pixels_back_and_keeps_the_largest_rest():
    probs, truth = _scaphoid_over_lunate()
    masks = probs > 0.5
    kept = apply_rule(masks[0], "exclusive", claimed=masks[1])
    np.testing.assert_array_equal(kept, truth[0])
    claimed = masks[1].copy()
    claimed[8:20, 6] = True  # a claimed column splits the rest into columns 2-5 and 7-11: the larger part stays
    kept = apply_rule(masks[0], "exclusive", claimed=claimed)
    assert kept.sum() == 12 * 5 and kept[10, 8] and not kept[10, 2]
    # without claims given, the other classes' masks (packed or not) claim, before their own rules
    expected = np.stack([truth[0], masks[1]])
    packed = PackedMasks(np.packbits(masks, axis=-1), 32)
    for given in (masks, packed):
        np.testing.assert_array_equal(np.asarray(PostProcessed(given, ["exclusive", "none"])), expected)
    # the neighbour's own label on the rule too: every pixel of it is claimed by class 0, nothing is left
    assert not np.asarray(PostProcessed(masks, ["none", "exclusive"]))[1].any()
    # at prediction the claims are the probabilities above 0.5, not the masks at the (lower) tuned thresholds: the
    # neighbour at threshold 0.1 would also claim its faint halo over class 0's bone
    halo = probs.copy()
    halo[1][truth[0]] = 0.3
    low = halo > np.array([0.5, 0.1], np.float32)[:, None, None]
    given_claims = PostProcessed(low, ["exclusive", "none"], claims=Claims.of(halo > 0.5))
    np.testing.assert_array_equal(np.asarray(given_claims)[0], truth[0])
    assert not np.asarray(PostProcessed(low, ["exclusive", "none"]))[0].any()
    # a bone it articulates with (attached_to, either way) does not count: a joint overlaps in projection
    for attached_to in ([None, 0], [1, None]):
        np.testing.assert_array_equal(np.asarray(PostProcessed(masks, ["exclusive", "none"], attached_to))[0],
                                      masks[0])


def test_masks_from_rows_gives_the_claims_of_its_rows_band_by_band():
    from mmseg_text.inference.tiling import TensorRows, masks_from_rows

    rng = np.random.default_rng(1)
    probs = torch.from_numpy(rng.random((4, 37, 21)).astype(np.float32))  # 4 classes: 3 - k is never k
    masks, claims = masks_from_rows(TensorRows(probs), [0.3] * 4, band=8, packed=True, claim_threshold=0.5)
    whole = Claims.of(probs.numpy() > 0.5)
    np.testing.assert_array_equal(claims.count, whole.count)
    for k in range(4):
        np.testing.assert_array_equal(claims.by_others(k), whole.by_others(k))
        np.testing.assert_array_equal(claims.by_others(k, (3 - k,)),
                                      np.delete(probs.numpy() > 0.5, [k, 3 - k], axis=0).any(0))
    np.testing.assert_array_equal(np.asarray(masks), probs.numpy() > 0.3)


def test_exclusive_is_chosen_where_a_label_covers_its_neighbour_and_not_for_the_neighbour():
    probs, truth = _scaphoid_over_lunate()
    probs_t, truth_t = torch.from_numpy(np.stack([probs, probs])), torch.from_numpy(np.stack([truth, truth]))
    counts = threshold_sweep_counts(probs_t, truth_t, components=True)
    assert "exclusive" in counts.rules
    thresholds, rules, dice = best_thresholds_and_rules(counts)
    assert rules == ["exclusive", "none"]
    joint = threshold_sweep_counts(probs_t, truth_t, components=True, attached_to=[None, 0])
    assert best_thresholds_and_rules(joint)[1] == ["none", "none"]  # the neighbour may overlap: nothing to take
    assert dice[0] == pytest.approx(1.0, abs=1e-3) and dice[1] == pytest.approx(1.0, abs=1e-3)
    plain = counts.mean_dice()[0].max()
    assert plain == pytest.approx(2 * 120 / (240 + 120), abs=1e-3)  # without it: 0.667, the demo's failing scaphoid
