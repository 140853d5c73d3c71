"""Foreground-aware crops of the high-resolution cache: never only background, byte-aligned, read from a
memory-mapped entry exactly as from memory, seeded like the augmentation, and copy-paste from the same place."""
from __future__ import annotations

import numpy as np
import pytest

from mmseg_text.config import ConfigError, load_config
from mmseg_text.data.cache import build_cache, crop_sample, load_or_build, load_window, preprocess_sample
from mmseg_text.data.copy_paste import CopyPaste
from mmseg_text.data.crops import foreground_map, pick_origin
from mmseg_text.data.dataset import SegmentationDataset
from mmseg_text.data.index import build_index
from mmseg_text.data.masks import pack_masks
from mmseg_text.data.preprocess import Preprocessor


def test_every_crop_contains_the_only_foreground_pixel_and_is_byte_aligned():
    size, crop = 128, 32
    for fy, fx in [(0, 0), (127, 127), (60, 5), (3, 122), (64, 64)]:
        masks = np.zeros((2, size, size), bool)
        masks[1, fy, fx] = True
        fg = foreground_map(pack_masks(masks))
        rng = np.random.default_rng(0)
        origins = {pick_origin(fg, size, crop, rng) for _ in range(200)}
        for y0, x0 in origins:
            assert x0 % 8 == 0 and 0 <= y0 <= size - crop and 0 <= x0 <= size - crop
            assert y0 <= fy < y0 + crop and x0 <= fx < x0 + crop
        if 40 <= fy <= 80 and 40 <= fx <= 80:  # away from the edges the pixel's place in the crop varies
            assert len({y0 for y0, _ in origins}) > 20 and len({x0 for _, x0 in origins}) == 4


def test_without_foreground_the_crop_is_uniform_and_a_too_large_crop_is_an_error():
    rng = np.random.default_rng(1)
    origins = np.array([pick_origin(None, 256, 64, rng) for _ in range(400)])
    assert origins[:, 0].min() < 20 and origins[:, 0].max() > 170 and set(origins[:, 1] % 8) == {0}
    with pytest.raises(ValueError, match="larger than the cached image"):
        pick_origin(None, 64, 128, rng)


@pytest.fixture
def index_and_cache(tiny_root, tmp_path, catalogue):
    cfg = load_config(None, [f"data.root={tiny_root}", "data.num_folds=2"])
    index = build_index(cfg.data, catalogue, progress=False)
    report = build_cache(index.records, cache_dir=tmp_path, image_size=256, class_names=catalogue.names,
                         workers=1, progress=False)
    assert report.disk_bytes == sum(p.stat().st_size for p in report.paths) > 0
    return index, report


def test_a_window_of_the_mapped_entry_equals_the_window_of_the_whole_sample(index_and_cache, catalogue):
    index, report = index_and_cache
    for record, path in list(zip(index.records, report.paths))[:3]:
        whole = load_or_build(path, record, 256, catalogue.names)
        for origin in [(0, 0), (100, 64), (192, 192)]:
            mapped, got = load_window(path, record, 256, catalogue.names, 64, lambda fg, o=origin: o)
            memory, _ = crop_sample(whole, 64, lambda fg, o=origin: o)
            y0, x0 = origin
            assert got == origin and mapped.orig_size == whole.orig_size
            np.testing.assert_array_equal(mapped.image, whole.image[y0:y0 + 64, x0:x0 + 64])
            np.testing.assert_array_equal(mapped.masks, whole.masks[:, y0:y0 + 64, x0:x0 + 64])
            np.testing.assert_array_equal(memory.masks, mapped.masks)
        # the foreground map handed to the chooser is the OR of the labels
        seen = {}
        load_window(path, record, 256, catalogue.names, 64, lambda fg: seen.setdefault("fg", fg) is None or (0, 0))
        np.testing.assert_array_equal(seen["fg"], foreground_map(pack_masks(whole.masks)))


def test_a_damaged_entry_is_rebuilt_and_cropped_in_memory(index_and_cache, catalogue):
    index, report = index_and_cache
    path, record = report.paths[0], index.records[0]
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    sample, _ = load_window(path, record, 256, catalogue.names, 64, lambda fg: (8, 16))
    truth = preprocess_sample(record, 256, catalogue.names)
    np.testing.assert_array_equal(sample.masks, truth.masks[:, 8:72, 16:80])


def test_dataset_crops_always_show_bones_are_seeded_and_paste_from_the_same_place(tiny_root, tmp_path, catalogue):
    cfg = load_config(None, [f"data.root={tiny_root}", "data.num_folds=2"])
    index = build_index(cfg.data, catalogue, progress=False)
    pre = Preprocessor(image_size=256, mean=(0.5,), std=(0.5,), window=64)
    carpals = tuple(i for i, g in enumerate(catalogue.groups) if g == "carpal")

    def dataset(seed, paste=0.0, cache=True):
        return SegmentationDataset(index.records, index.facts, class_names=catalogue.names, preprocess=pre,
                                   cache_dir=tmp_path if cache else None, augment_seed=seed, progress=False, crop=64,
                                   copy_paste=CopyPaste(paste, carpals) if paste else None)

    a, b, other, uncached = dataset(3), dataset(3), dataset(4), dataset(3, cache=False)
    differs = 0
    for i in range(len(a)):
        sa, sb, so, su = a[i], b[i], other[i], uncached[i]
        assert sa["image"].shape == (1, 64, 64) and sa["masks"].shape == (len(catalogue), 64, 64)
        assert sa["masks"].any()  # never only background
        np.testing.assert_array_equal(sa["masks"].numpy(), sb["masks"].numpy())
        np.testing.assert_array_equal(sa["image"].numpy(), su["image"].numpy())  # cache or not, same crop
        differs += int(not np.array_equal(sa["image"].numpy(), so["image"].numpy()))
    assert differs >= len(a) - 1
    pasted, plain = dataset(3, paste=1.0), a
    changed = 0
    for i in range(len(plain)):
        p, q = pasted[i]["masks"].numpy(), plain[i]["masks"].numpy()
        moved = (p != q).any(axis=0)
        changed += int(moved.any())
        assert p[list(carpals)][:, moved].any(axis=0).all()  # every changed pixel now lies in a pasted carpal
    assert changed >= len(plain) // 3


def test_crop_and_cache_sizes_are_checked_in_the_config():
    cfg = load_config(None, ["data.image_size=256", "data.cache_size=1024", "data.crop_size=256"])
    assert (cfg.data.working_size, cfg.data.input_size) == (1024, 256)
    cfg = load_config(None, ["data.image_size=512", "data.crop_size=128"])
    assert (cfg.data.working_size, cfg.data.input_size) == (512, 128)
    with pytest.raises(ConfigError, match="data.crop_size is not set"):
        load_config(None, ["data.image_size=256", "data.cache_size=1024"])
    with pytest.raises(ConfigError, match="larger than the cached image"):
        load_config(None, ["data.image_size=256", "data.crop_size=512"])
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_config(None, ["data.crop_size=100"])
