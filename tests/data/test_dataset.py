import json
import logging

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mmseg_text.catalogue import load_catalogue
from mmseg_text.config import Config, DataConfig
from mmseg_text.data.dataset import (DatasetError, HandXrayDataset, build_datasets, collate, image_to_tensor,
                                     normalisation_stats)
from mmseg_text.data.images import ImageReadError
from mmseg_text.data.layout import find_images

CAT = load_catalogue()
PERSONS = range(1, 7)
SIZE = 64


def _stem(pid, hand):
    return f"image{1661130828000 + pid * 10 + hand}" + ("_R" if hand == 0 else "_L")


def _square(k):
    """Class k: a 6-pixel square in cell k of a 6x5 grid over the 64 px image."""
    row, col = divmod(k, 6)
    x0, y0 = 2 + col * 10, 2 + row * 12
    return [[x0, y0], [x0 + 5, y0], [x0 + 5, y0 + 5], [x0, y0 + 5]]


def _make_root(root, with_test=True):
    image = np.zeros((SIZE, SIZE), np.uint8)
    image[:, : SIZE // 4] = 200  # bright band on the left edge: flips are visible
    for split, persons in (("train", PERSONS), ("test", (7,) if with_test else ())):
        for pid in persons:
            for hand in range(2):
                d = root / split / "DCM" / f"ID{pid:03d}"
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{_stem(pid, hand)}.png"), image)
                if split == "train":
                    j = root / split / "outputs_json" / f"ID{pid:03d}"
                    j.mkdir(parents=True, exist_ok=True)
                    anns = [{"label": n, "points": _square(k)} for k, n in enumerate(CAT.names)]
                    (j / f"{_stem(pid, hand)}.json").write_text(json.dumps({"annotations": anns}))
    pd.DataFrame({"ID": list(PERSONS) + [7], "나이": [30, 41, None, 25, 52, 60, 33],
                  "성별": [" _x0008_여", "남", "여", "남", "여", "남", "여"],
                  "체중(몸무게)": [55, 80, 60, 70, None, 75, 50], "키(신장)": [160, 178, 165, 172, 158, 181, 155]}
                 ).to_csv(root / "meta_data.csv", index=False)
    return root


def _derived():
    rows = [{"image_id": _stem(p, h), "person_id": p, "side": "right" if h == 0 else "left",
             "wrist_angle_deg": 5.0 + p if h == 0 else 45.0, "bent_wrist": h == 1} for p in PERSONS for h in range(2)]
    return pd.DataFrame(rows)


@pytest.fixture
def root(tmp_path):
    return _make_root(tmp_path / "root")


def _cfg(root, **kw):
    base = dict(root=str(root), image_size=32, num_folds=3, num_workers=0, augment=[])
    base.update(kw)
    return DataConfig(**base)


def test_sample_dict_matches_the_contract(root):
    ds = HandXrayDataset(root, "train", _cfg(root), CAT, indices=[0, 1], derived=_derived(), progress=False)
    sample = ds[0]
    assert set(sample) == {"image", "masks", "image_id", "image_name", "person_id", "side", "meta", "orig_size"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 32, 32)
    assert sample["masks"].dtype == torch.float32 and sample["masks"].shape == (29, 32, 32)
    assert sample["image_id"] == "image1661130828010_R" and sample["image_name"] == "image1661130828010_R.png"
    assert sample["person_id"] == 1 and sample["side"] == "right" and sample["orig_size"] == (64, 64)
    assert sample["meta"] == {"age": 30.0, "sex": "female", "weight": 55.0, "height": 160.0,
                              "wrist_angle_deg": 6.0, "bent_wrist": False}
    # class 0 fills source pixels 2..7 -> 1..3 at half size; class 7 (cell row 1, col 1) -> source 12..17, 14..19
    masks = sample["masks"]
    assert masks[0, 2, 2] == 1 and masks[0, 10, 10] == 0 and masks[1, 2, 2] == 0
    assert masks[7, 8, 7] == 1 and masks[7, 2, 2] == 0
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    # normalised with ImageNet statistics: a 200-valued pixel in channel 0
    mean, std = normalisation_stats(3)
    assert torch.isclose(sample["image"][0, 5, 2], torch.tensor((200 / 255 - mean[0]) / std[0]), atol=1e-5)
    assert torch.isclose(sample["image"][2, 5, 30], torch.tensor((0 - mean[2]) / std[2]), atol=1e-5)


def test_missing_metadata_values_are_none(root):
    ds = HandXrayDataset(root, "train", _cfg(root), CAT, indices=[4, 8], derived=_derived(), progress=False)
    assert ds[0]["meta"]["age"] is None and ds[0]["meta"]["sex"] == "female"  # person 3: no age
    assert ds[1]["meta"]["weight"] is None  # person 5: no weight


def test_flip_swaps_side_and_caption_follows_augmentation(root):
    cfg = _cfg(root, augment=[{"name": "HorizontalFlip", "p": 1.0}])
    plain = HandXrayDataset(root, "train", _cfg(root), CAT, indices=[0, 1], derived=_derived(), progress=False)
    flipped = HandXrayDataset(root, "train", cfg, CAT, indices=[0, 1], derived=_derived(), progress=False,
                              transforms=cfg.augment, caption_fn=lambda s: f"{s['side']} hand")
    a, b = plain[0], flipped[0]
    assert a["side"] == "right" and b["side"] == "left" and b["caption"] == "left hand"
    assert flipped[1]["side"] == "right" and flipped[1]["caption"] == "right hand"
    torch.testing.assert_close(b["masks"], a["masks"].flip(-1))
    torch.testing.assert_close(b["image"], a["image"].flip(-1))
    assert b["meta"]["wrist_angle_deg"] == a["meta"]["wrist_angle_deg"]  # anatomical: unchanged by a flip


def test_train_and_val_folds_split_persons(root):
    cfg = _cfg(root)
    train = HandXrayDataset(root, "train", cfg, CAT, derived=_derived(), progress=False)
    val = HandXrayDataset(root, "val", cfg, CAT, derived=_derived(), progress=False)
    train_p, val_p = {r.person_id for r in train.records}, {r.person_id for r in val.records}
    assert len(train) + len(val) == 12 and not train_p & val_p and train_p | val_p == set(PERSONS)
    assert len(val_p) == 2


def test_build_datasets_and_collate(root):
    cfg = Config(data=_cfg(root, derived_meta=None))
    derived_csv = root / "derived.csv"
    _derived().to_csv(derived_csv, index=False)
    cfg.data.derived_meta = str(derived_csv)
    cfg.data.augment = [{"name": "HorizontalFlip", "p": 0.5}]
    train, val = build_datasets(cfg, CAT, progress=False)
    assert len(train) == 8 and len(val) == 4 and len(train.transforms) == 1 and len(val.transforms) == 0
    batch = collate([val[0], val[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["masks"].shape == (2, 29, 32, 32)
    assert batch["side"] == [val[0]["side"], val[1]["side"]] and batch["orig_size"] == [(64, 64), (64, 64)]
    assert isinstance(batch["meta"], list) and batch["meta"][0]["bent_wrist"] in (True, False)
    loader = torch.utils.data.DataLoader(train, batch_size=4, collate_fn=collate)
    assert next(iter(loader))["image"].shape == (4, 3, 32, 32)


def test_unlabelled_test_images(root):
    ds = HandXrayDataset(root, "test", _cfg(root, in_chans=1), CAT, progress=False)
    sample = ds[0]
    assert "masks" not in sample and sample["side"] == "unknown"
    assert sample["image"].shape == (1, 32, 32) and sample["person_id"] == 7
    assert sample["meta"]["wrist_angle_deg"] is None and sample["meta"]["bent_wrist"] is None
    assert sample["meta"]["age"] == 33.0


def test_uncached_path_equals_cached_path(root):
    cached = HandXrayDataset(root, "train", _cfg(root), CAT, indices=[2], derived=_derived(), progress=False)
    direct = HandXrayDataset(root, "train", _cfg(root, cache=False), CAT, indices=[2], derived=_derived())
    assert cached.cache_paths[0].exists() and direct.cache_paths is None
    torch.testing.assert_close(cached[0]["image"], direct[0]["image"])
    torch.testing.assert_close(cached[0]["masks"], direct[0]["masks"])


def test_clahe_changes_the_image(root):
    on = HandXrayDataset(root, "train", _cfg(root, clahe=True), CAT, indices=[0], derived=_derived(), progress=False)
    off = HandXrayDataset(root, "train", _cfg(root), CAT, indices=[0], derived=_derived(), progress=False)
    assert not torch.equal(on[0]["image"], off[0]["image"])


@pytest.mark.parametrize("cache", [True, False])
def test_bad_samples_fail_naming_the_file_or_are_skipped(root, caplog, cache):
    bad = find_images(root, "train")[3].image_path
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    cfg = _cfg(root, cache=cache)
    if cache:  # without skipping, the cache build finds it at construction
        with pytest.raises(DatasetError, match=bad.name):
            HandXrayDataset(root, "train", cfg, CAT, indices=range(12), derived=_derived(), progress=False)
    else:  # uncached and not skipping: the sample itself fails, naming the file
        ds = HandXrayDataset(root, "train", cfg, CAT, indices=range(12), derived=_derived())
        with pytest.raises(ImageReadError, match=bad.name):
            ds[3]
    cfg.skip_bad_samples = True
    with caplog.at_level(logging.WARNING, logger="mmseg_text.data.dataset"):
        ds = HandXrayDataset(root, "train", cfg, CAT, indices=range(12), derived=_derived(), progress=False)
    assert len(ds) == 11 and [p for p, _ in ds.skipped] == [str(bad)]
    assert "truncated" in ds.skipped[0][1]
    assert bad.name in caplog.text
    assert all(ds[i]["image_name"] != bad.name for i in range(len(ds)))


def test_train_image_without_json_is_an_error(root):
    record = find_images(root, "train")[5]
    record.json_path.unlink()
    with pytest.raises(DatasetError, match=record.image_path.name):
        HandXrayDataset(root, "train", _cfg(root), CAT, derived=_derived(), progress=False)


def test_bad_mode_and_image_to_tensor():
    with pytest.raises(ValueError, match="mode must be one of"):
        HandXrayDataset("/nowhere", "training", DataConfig(), CAT)
    tensor = image_to_tensor(np.full((4, 5), 255, np.uint8), in_chans=2)
    mean, std = normalisation_stats(2)
    assert tensor.shape == (2, 4, 5)
    assert torch.allclose(tensor, torch.tensor((1 - mean[0]) / std[0]))


def test_side_and_angle_are_derived_from_annotations_and_cached(tiny_root, tmp_path, monkeypatch):
    from mmseg_text.data.wrist import derive_metadata

    truth = pd.read_csv(tiny_root / "synthetic_truth.csv").set_index("image_id")
    derived = derive_metadata(tiny_root, "train").set_index("image_id")
    cfg = _cfg(tiny_root, num_folds=2, cache_dir=str(tmp_path / "cache"))
    train = HandXrayDataset(tiny_root, "train", cfg, CAT, progress=False)
    val = HandXrayDataset(tiny_root, "val", cfg, CAT, progress=False)
    assert len(train) + len(val) == (truth.split == "train").sum()
    for ds in (train, val):
        for i, record in enumerate(ds.records):
            expected = derived.loc[record.image_id]
            assert ds.side_of(i) == expected.side
            meta = ds.meta_of(i)
            assert meta["wrist_angle_deg"] == pytest.approx(expected.wrist_angle_deg)
            assert meta["bent_wrist"] == bool(expected.bent_wrist)
            assert meta["sex"] in ("female", "male") and meta["height"] > 100
    assert list((tmp_path / "cache" / "derived").glob("train-*.csv"))

    import mmseg_text.data.wrist as wrist

    monkeypatch.setattr(wrist, "derive_metadata", lambda *a, **k: pytest.fail("derived frame not reused"))
    again = HandXrayDataset(tiny_root, "val", cfg, CAT, progress=False)
    assert [again.side_of(i) for i in range(len(again))] == [val.side_of(i) for i in range(len(val))]
    sample = again[0]
    assert sample["masks"].shape == (29, 32, 32) and sample["masks"].sum() > 0
    assert sample["orig_size"] == (256, 256)


def test_labelled_test_split_has_masks_and_sides(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, cache_dir=str(tmp_path / "cache"))
    from mmseg_text.data.wrist import derive_metadata

    ds = HandXrayDataset(tiny_root, "test", cfg, CAT, progress=False)
    derived = derive_metadata(tiny_root, "test").set_index("image_id")
    assert len(ds) == len(derived)
    sample = ds[0]
    assert "masks" in sample and sample["side"] == derived.loc[sample["image_id"], "side"]
