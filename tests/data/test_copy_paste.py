"""Copy-paste of bones: the donor's bone with all its labels, nothing else changed, mirrored across hand sides,
seeded like the augmentation, captions untouched."""
from __future__ import annotations

import numpy as np
import pytest

from mmseg_text.config import load_config
from mmseg_text.data.copy_paste import CopyPaste, paste_bone
from mmseg_text.data.dataset import SegmentationDataset
from mmseg_text.data.index import build_index
from mmseg_text.data.preprocess import Preprocessor


def _arrays(seed, k=3, size=32):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size), dtype=np.uint8)
    masks = np.zeros((k, size, size), bool)
    masks[0, 4:12, 2:10] = True
    masks[1, 8:16, 6:14] = True  # overlaps class 0
    masks[2, 20:28, 20:30] = True
    return image, masks


def test_paste_copies_the_bone_with_every_overlapping_label_and_nothing_else():
    image, masks = _arrays(0)
    donor_image, donor_masks = _arrays(1)
    donor_masks = donor_masks[:, :, ::-1].copy()  # the donor's bones elsewhere
    out_image, out_masks, pasted = paste_bone(image, masks, donor_image, donor_masks, np.random.default_rng(0), [1])
    region = donor_masks[1]
    assert pasted == 1
    np.testing.assert_array_equal(out_image[region], donor_image[region])
    np.testing.assert_array_equal(out_image[~region], image[~region])
    np.testing.assert_array_equal(out_masks[:, region], donor_masks[:, region])  # class 0 kept where it overlaps
    assert out_masks[0][region].any() and out_masks[1][region].all()
    np.testing.assert_array_equal(out_masks[:, ~region], masks[:, ~region])
    mirrored = paste_bone(image, masks, donor_image, donor_masks, np.random.default_rng(0), [1], mirror_donor=True)[1]
    np.testing.assert_array_equal(mirrored[1][donor_masks[1][:, ::-1]], True)  # a mirrored donor pastes mirrored
    none = paste_bone(image, masks, donor_image, np.zeros_like(donor_masks), np.random.default_rng(0), [1])
    assert none[2] is None and none[0] is image


def test_the_dataset_pastes_carpals_seeded_and_keeps_captions(tiny_root, tmp_path, catalogue):
    cfg = load_config(None, [f"data.root={tiny_root}", "data.num_folds=2", f"data.cache_dir={tmp_path}",
                             "data.copy_paste_p=1.0", "data.copy_paste_groups=[carpal]"])
    paste = CopyPaste.from_config(cfg.data, catalogue.names, catalogue.groups)
    assert [catalogue.names[i] for i in paste.classes] == [n for n, g in zip(catalogue.names, catalogue.groups)
                                                           if g == "carpal"]
    index = build_index(cfg.data, catalogue, progress=False)
    pre = Preprocessor(image_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)

    def dataset(p):
        return SegmentationDataset(index.records, index.facts, class_names=catalogue.names, preprocess=pre,
                                   cache_dir=tmp_path, augment_seed=3, progress=False, caption_fn=lambda s: s["side"],
                                   copy_paste=CopyPaste(p, paste.classes) if p else None)

    plain, pasted, again = dataset(0.0), dataset(1.0), dataset(1.0)
    changed = 0
    for i in range(len(plain)):
        a, b, c = plain[i], pasted[i], again[i]
        np.testing.assert_array_equal(b["masks"].numpy(), c["masks"].numpy())  # same seed, same paste
        assert b["caption"] == a["caption"] and b["side"] == a["side"]
        changed += int((a["masks"] != b["masks"]).any())
    assert changed >= len(plain) // 2  # most samples received a bone


def test_copy_paste_config_errors_name_the_key(catalogue):
    with pytest.raises(ValueError, match="copy_paste_classes.*not in the catalogue: \\['Femur'\\]"):
        CopyPaste.from_config(load_config(None, ["data.copy_paste_p=0.5", "data.copy_paste_classes=[Femur]"]).data,
                              catalogue.names, catalogue.groups)
    with pytest.raises(ValueError, match="select no class"):
        CopyPaste.from_config(load_config(None, ["data.copy_paste_p=0.5", "data.copy_paste_groups=[wing]"]).data,
                              catalogue.names, catalogue.groups)
    with pytest.raises(ValueError, match="select no class"):  # no hand-bone group is assumed by default
        CopyPaste.from_config(load_config(None, ["data.copy_paste_p=0.5"]).data, catalogue.names, catalogue.groups)
    assert CopyPaste.from_config(load_config(None).data, catalogue.names, catalogue.groups) is None
