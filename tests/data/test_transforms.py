import numpy as np
import pytest

from mmseg_text.config import DataConfig
from mmseg_text.data.facts import flip_side
from mmseg_text.data.transforms import Augmenter, build_train_transforms, build_transforms, is_mirrored


def _image_and_masks():
    image = np.zeros((32, 32), np.uint8)
    image[:, :8] = 200  # bright stripe on the left
    masks = np.zeros((3, 32, 32), np.uint8)
    masks[0, 4:10, 2:6] = 1
    masks[2, 20:30, 20:30] = 1
    return image, masks


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        build_transforms([{"name": "HorizonalFlip", "p": 0.5}])
    message = str(err.value)
    assert "data.augment[0]" in message and "'HorizonalFlip'" in message
    assert "did you mean ['HorizontalFlip'" in message and "Affine" in message


def test_bad_arguments_name_the_transform():
    with pytest.raises(ValueError, match=r"data.augment\[1\]: bad arguments for Affine"):
        build_transforms([{"name": "HorizontalFlip"}, {"name": "Affine", "scale": "big"}])
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_transforms([{"p": 0.5}])


def test_horizontal_flip_moves_image_and_masks_together_and_reports_mirror():
    image, masks = _image_and_masks()
    aug = build_transforms([{"name": "HorizontalFlip", "p": 1.0}])
    out_image, out_masks, mirrored = aug(image, masks)
    assert mirrored is True
    assert out_image[0, 31] == 200 and out_image[0, 0] == 0
    np.testing.assert_array_equal(out_masks, masks[:, :, ::-1])
    assert out_masks.shape == (3, 32, 32)


def test_two_reflections_are_a_rotation_not_a_mirror():
    image, masks = _image_and_masks()
    aug = build_transforms([{"name": "HorizontalFlip", "p": 1.0}, {"name": "VerticalFlip", "p": 1.0}])
    out_image, out_masks, mirrored = aug(image, masks)
    assert mirrored is False
    np.testing.assert_array_equal(out_masks, masks[:, ::-1, ::-1])


def test_flip_with_p_zero_is_not_reported():
    image, masks = _image_and_masks()
    _, out_masks, mirrored = build_transforms([{"name": "HorizontalFlip", "p": 0.0}])(image, masks)
    assert mirrored is False
    np.testing.assert_array_equal(out_masks, masks)


def test_flip_inside_one_of_is_detected():
    image, masks = _image_and_masks()
    aug = build_transforms([{"name": "OneOf", "p": 1.0, "transforms": [{"name": "HorizontalFlip", "p": 1.0}]}])
    assert aug(image, masks)[2] is True


def test_mirror_bookkeeping_for_d4_elements():
    assert is_mirrored([("D4", {"group_element": "hvt"})])
    assert is_mirrored([("SquareSymmetry", {"group_element": "h"})])
    assert not is_mirrored([("D4", {"group_element": "r90"})])
    assert not is_mirrored([("Transpose", {}), ("HorizontalFlip", {})])
    assert flip_side("left") == "right" and flip_side("right") == "left" and flip_side("unknown") == "unknown"


def test_default_train_pipeline_keeps_shapes_and_binary_masks():
    aug = build_train_transforms(DataConfig())
    assert [type(t).__name__ for t in aug.transforms] == ["HorizontalFlip", "Affine", "RandomBrightnessContrast",
                                                           "RandomGamma"]
    image, masks = _image_and_masks()
    for _ in range(5):
        out_image, out_masks, mirrored = aug(image, masks)
        assert out_image.shape == (32, 32) and out_image.dtype == np.uint8
        assert out_masks.shape == (3, 32, 32) and set(np.unique(out_masks)) <= {0, 1}
        assert isinstance(mirrored, bool)
    # image only (unlabelled test images)
    out_image, out_masks, _ = aug(image, None)
    assert out_masks is None and out_image.shape == (32, 32)


def test_empty_pipeline_is_identity():
    aug = build_transforms([])
    image, masks = _image_and_masks()
    out_image, out_masks, mirrored = aug(image, masks)
    assert isinstance(aug, Augmenter) and len(aug) == 0 and mirrored is False
    assert out_image is image and out_masks is masks
