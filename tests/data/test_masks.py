import cv2
import numpy as np
import pytest

from mmseg_text.data.masks import pack_masks, polygons_to_masks, unpack_masks

NAMES = ["a", "b", "c"]


def test_each_class_fills_its_own_channel_and_overlaps_are_kept():
    polygons = {
        "a": np.array([[10, 10], [29, 10], [29, 29], [10, 29]], float),
        "b": np.array([[20, 20], [39, 20], [39, 39], [20, 39]], float),
    }
    masks = polygons_to_masks(polygons, NAMES, out_size=(50, 60))
    assert masks.dtype == bool and masks.shape == (3, 50, 60)
    assert masks[0, 15, 15] and not masks[1, 15, 15]
    assert masks[0, 25, 25] and masks[1, 25, 25]  # overlap: both labels
    assert not masks[0, 5, 5] and not masks[0, 35, 35] and masks[1, 35, 35]
    assert not masks[2].any()  # class without a polygon stays empty
    assert masks[0].sum() == 20 * 20  # corners inclusive, as cv2.fillPoly at full res


def test_scaled_polygon_matches_full_resolution_fill_and_resize():
    src, out = 1024, 256
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = np.stack([512 + 300 * np.cos(angles), 400 + 200 * np.sin(angles)], 1)
    rect = np.array([[100, 100], [499, 100], [499, 499], [100, 499]], float)
    fast = polygons_to_masks({"a": circle, "b": rect}, NAMES, out_size=(out, out), src_size=(src, src))
    for k, poly in enumerate([circle, rect]):
        full = np.zeros((src, src), np.uint8)
        cv2.fillPoly(full, [np.round(poly).astype(np.int32)], 1)
        naive = cv2.resize(full, (out, out), interpolation=cv2.INTER_AREA) >= 0.5
        iou = (fast[k] & naive).sum() / (fast[k] | naive).sum()
        assert iou > 0.98, iou
    # the rectangle 100..499 at 1/4 scale covers pixel 25..124 (centres aligned like cv2.resize)
    assert fast[1, 60, 25] and fast[1, 60, 124] and not fast[1, 60, 23] and not fast[1, 60, 126]


def test_non_square_scaling_uses_both_axes():
    rect = np.array([[0, 0], [99, 0], [99, 49], [0, 49]], float)  # left half (x) and top half (y)
    masks = polygons_to_masks({"a": rect}, NAMES, out_size=(20, 20), src_size=(100, 200))
    assert masks[0, :10, :10].all() and not masks[0, 11:, :].any() and not masks[0, :, 11:].any()


def test_unknown_label_raises_naming_it():
    with pytest.raises(ValueError, match="'zebra'"):
        polygons_to_masks({"zebra": np.zeros((3, 2))}, NAMES, out_size=(8, 8))


def test_pack_unpack_roundtrip_odd_width():
    rng = np.random.default_rng(0)
    masks = rng.random((29, 13, 21)) > 0.5
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8 and packed.shape == (29, 13, 3)
    back = unpack_masks(packed, 21)
    assert back.dtype == bool
    np.testing.assert_array_equal(back, masks)
