"""The data index (records -> metadata -> derived side/wrist angle -> facts -> folds) and the
SegmentationDataset samples built from it, on the tiny synthetic set of tests/conftest.py."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import mmseg_text.data.index as index_module
from mmseg_text.catalogue import load_catalogue
from mmseg_text.config import DataConfig
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.dataset import DatasetError, SegmentationDataset, collate
from mmseg_text.data.images import ImageReadError, read_image
from mmseg_text.data.index import DataIndex, ImageFacts, build_index, cache_dir_of, load_derived_csv
from mmseg_text.data.layout import find_images
from mmseg_text.data.masks import polygons_to_masks
from mmseg_text.data.metadata import load_metadata, person_meta
from mmseg_text.data.preprocess import Preprocessor, apply_clahe
from mmseg_text.data.synthetic import TRUTH_FILE
from mmseg_text.data.facts import flip_side
from mmseg_text.data.transforms import build_transforms
from mmseg_text.data.wrist import DERIVED_COLUMNS, derive_metadata

SIZE = 64  # model input; tiny_root's sources are 256 px
SOURCE = 256
MEAN = (0.5, 0.25, 0.125)  # deliberately not ImageNet's, and different per channel
STD = (0.2, 0.3, 0.4)
META_KEYS = {"age", "sex", "weight", "height", "wrist_angle_deg", "bent_wrist"}
SAMPLE_KEYS = {"image", "masks", "image_id", "image_name", "person_id", "side", "meta", "orig_size"}


def _cfg(root, tmp_path, **kw) -> DataConfig:
    """Caches under tmp_path: tiny_root is shared and read-only."""
    base = {"root": str(root), "image_size": SIZE, "num_folds": 2, "num_workers": 0, "augment": [],
            "cache_dir": str(tmp_path / "cache")}
    base.update(kw)
    return DataConfig(**base)


def _preprocess(clahe=False, mean=MEAN, std=STD) -> Preprocessor:
    return Preprocessor(image_size=SIZE, mean=mean, std=std, clahe=clahe)


def _dataset(index: DataIndex, catalogue, *, cache_dir=None, preprocess=None, **kw) -> SegmentationDataset:
    kw.setdefault("progress", False)
    return SegmentationDataset(index.records, index.facts, class_names=catalogue.names,
                               preprocess=preprocess or _preprocess(), labelled=index.split == "train",
                               cache_dir=cache_dir, **kw)


def _truth(root) -> pd.DataFrame:
    return pd.read_csv(root / TRUTH_FILE).set_index("image_id")


def _copy(root, tmp_path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    return copy


def _expected_image(record, mean=MEAN, std=STD, clahe=False) -> np.ndarray:
    """The Preprocessor's maths written out: INTER_AREA resize, [optional CLAHE], /255, (x - mean) / std."""
    resized = _preprocess().resize(read_image(record.image_path))
    if clahe:
        resized = apply_clahe(resized)
    gray = resized.astype(np.float64) / 255.0
    return np.stack([(gray - m) / s for m, s in zip(mean, std)])


def _expected_masks(record, catalogue) -> np.ndarray:
    polygons = load_annotation(record.json_path, known_labels=catalogue.names)
    return polygons_to_masks(polygons, catalogue.names, out_size=(SIZE, SIZE), src_size=(SOURCE, SOURCE))


def _no_derive(*args, **kwargs):
    pytest.fail("derive_metadata was called")


def _catalogue_without_geometry(tmp_path):
    bundled = load_catalogue()
    doc = yaml.safe_load(Path(bundled.source).read_text(encoding="utf-8"))
    assert "derived" in doc
    del doc["derived"]
    path = tmp_path / "no_geometry.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    catalogue = load_catalogue(path)
    assert catalogue.hand_geometry is None and catalogue.names == bundled.names
    return catalogue


# ----------------------------------------------------------------------------- samples
def test_sample_dict_matches_the_contract(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    ds = _dataset(index, catalogue, cache_dir=tmp_path / "cache")
    truth = _truth(tiny_root)
    metadata = load_metadata(tiny_root / "meta_data.xlsx")
    assert len(ds) == len(index) == int((truth["split"] == "train").sum()) == 8
    for i in (0, 1, len(ds) - 1):
        record, sample = index.records[i], ds[i]
        assert set(sample) == SAMPLE_KEYS
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, SIZE, SIZE)
        assert sample["masks"].dtype == torch.float32 and sample["masks"].shape == (29, SIZE, SIZE)
        assert set(sample["masks"].unique().tolist()) == {0.0, 1.0}
        assert sample["image_id"] == record.image_id and sample["image_name"] == record.image_path.name
        assert sample["image_name"].endswith(".png") and sample["image_id"] == Path(sample["image_name"]).stem
        assert isinstance(sample["person_id"], int) and sample["person_id"] == record.person_id
        assert sample["orig_size"] == (SOURCE, SOURCE)
        # side and wrist angle from the annotation geometry agree with the generator's truth
        expected = truth.loc[record.image_id]
        assert sample["side"] == expected["side"]
        assert set(sample["meta"]) == META_KEYS
        assert sample["meta"]["wrist_angle_deg"] == pytest.approx(expected["wrist_angle_deg"], abs=10.0)
        assert sample["meta"]["bent_wrist"] == bool(expected["bent_wrist"])
        person = person_meta(metadata, record.person_id)
        assert {k: sample["meta"][k] for k in ("age", "sex", "weight", "height")} == person
        assert sample["meta"]["sex"] in ("female", "male") and sample["meta"]["height"] > 100
        # masks: the polygons rasterised at the model size; image: the Preprocessor's normalisation
        np.testing.assert_array_equal(sample["masks"].numpy().astype(bool), _expected_masks(record, catalogue))
        assert (sample["masks"].flatten(1).sum(1) > 0).all()
        np.testing.assert_allclose(sample["image"].numpy(), _expected_image(record), atol=1e-5)


def test_preprocessor_normalisation_and_round_trip():
    pre = Preprocessor(image_size=8, mean=(0.4, 0.6), std=(0.5, 0.25))
    assert pre.in_chans == 2
    tensor = pre.to_tensor(np.full((4, 5), 255, np.uint8))
    assert tensor.dtype == torch.float32 and tensor.shape == (2, 4, 5)
    torch.testing.assert_close(tensor[0], torch.full((4, 5), (1 - 0.4) / 0.5))
    torch.testing.assert_close(tensor[1], torch.full((4, 5), (1 - 0.6) / 0.25))
    torch.testing.assert_close(pre.to_tensor(np.zeros((3, 3), np.uint8))[1], torch.full((3, 3), -0.6 / 0.25))
    image = np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))
    torch.testing.assert_close(pre(image), pre.to_tensor(pre.enhance(pre.resize(image))))
    assert pre(image).shape == (2, 8, 8)
    clahe = Preprocessor(image_size=8, mean=(0.5,), std=(0.5,), clahe=True)
    assert Preprocessor.from_dict(clahe.to_dict()) == clahe
    assert Preprocessor.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="one value per input channel"):
        Preprocessor(image_size=8, mean=(0.5, 0.5), std=(0.5,))


def test_one_channel_input(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    ds = _dataset(index, catalogue, preprocess=_preprocess(mean=(0.3,), std=(0.6,)))
    sample = ds[2]
    assert sample["image"].shape == (1, SIZE, SIZE)
    np.testing.assert_allclose(sample["image"].numpy(), _expected_image(index.records[2], (0.3,), (0.6,)), atol=1e-5)


def test_missing_metadata_values_are_none(tiny_root, tmp_path, catalogue):
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"ID": [1, 2, 4], "나이": [30, 41, None], "성별": [" _x0008_여", "남", "여"],
                  "체중(몸무게)": [55, None, 70], "키(신장)": [160, 178, 172]}).to_csv(meta, index=False)
    index = build_index(_cfg(tiny_root, tmp_path, meta_file=str(meta)), catalogue, progress=False)
    ds = _dataset(index, catalogue)
    by_person = {}
    for i, record in enumerate(index.records):
        by_person.setdefault(record.person_id, ds[i]["meta"])
    assert {k: by_person[1][k] for k in ("age", "sex", "weight", "height")} == \
        {"age": 30.0, "sex": "female", "weight": 55.0, "height": 160.0}
    assert by_person[2]["weight"] is None and by_person[2]["sex"] == "male"
    assert by_person[4]["age"] is None and by_person[4]["height"] == 172.0
    # person 6 is not in the table at all: every value unknown, the derived facts still there
    person_keys = ("age", "sex", "weight", "height")
    assert {k: by_person[6][k] for k in person_keys} == dict.fromkeys(person_keys)
    assert by_person[6]["wrist_angle_deg"] is not None


def test_flip_swaps_side_and_caption_follows_augmentation(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    def caption(sample):
        return f"{sample['side']} hand, wrist {sample['meta']['wrist_angle_deg']}"

    plain = _dataset(index, catalogue, caption_fn=caption)
    flipped = _dataset(index, catalogue, caption_fn=caption,
                       transforms=build_transforms([{"name": "HorizontalFlip", "p": 1.0}]))
    sides = set()
    for i in range(len(index)):
        a, b = plain[i], flipped[i]
        assert a["side"] in ("left", "right") and a["side"] == index.facts[i].side
        assert b["side"] == flip_side(a["side"]) != a["side"]
        assert a["caption"] == f"{a['side']} hand, wrist {a['meta']['wrist_angle_deg']}"
        assert b["caption"] == f"{b['side']} hand, wrist {a['meta']['wrist_angle_deg']}"
        torch.testing.assert_close(b["masks"], a["masks"].flip(-1))
        torch.testing.assert_close(b["image"], a["image"].flip(-1))
        assert b["meta"] == a["meta"]  # the wrist angle is anatomical: unchanged by a mirror
        sides.add(a["side"])
    assert sides == {"left", "right"}
    assert index.facts[0].side == plain[0]["side"]  # the facts themselves are not changed by a flip


def test_unknown_side_stays_unknown_under_a_flip(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    facts = [ImageFacts(side="unknown", meta=f.meta) for f in index.facts]
    ds = SegmentationDataset(index.records, facts, class_names=catalogue.names, preprocess=_preprocess(),
                             transforms=build_transforms([{"name": "HorizontalFlip", "p": 1.0}]),
                             caption_fn=lambda s: s["side"], progress=False)
    assert ds[0]["side"] == "unknown" and ds[0]["caption"] == "unknown"


def test_uncached_path_equals_cached_path(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    cached = _dataset(index, catalogue, cache_dir=tmp_path / "pixels")
    direct = _dataset(index, catalogue)
    assert direct.cache_paths is None
    assert len(cached.cache_paths) == len(index) and all(p.exists() for p in cached.cache_paths)
    assert all(p.parent == tmp_path / "pixels" / str(SIZE) for p in cached.cache_paths)
    for i in range(len(index)):
        a, b = cached[i], direct[i]
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
        torch.testing.assert_close(a["masks"], b["masks"], rtol=0, atol=0)
        assert a["orig_size"] == b["orig_size"] == (SOURCE, SOURCE)
    image, masks, orig = cached.load_arrays(0)
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE) and masks.dtype == bool and orig == (SOURCE, SOURCE)


def test_clahe_changes_the_image(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    on = _dataset(index, catalogue, cache_dir=tmp_path / "cache", preprocess=_preprocess(clahe=True))
    off = _dataset(index, catalogue, cache_dir=tmp_path / "cache", preprocess=_preprocess(clahe=False))
    assert not torch.equal(on[0]["image"], off[0]["image"])
    torch.testing.assert_close(on[0]["masks"], off[0]["masks"])
    np.testing.assert_allclose(on[0]["image"].numpy(), _expected_image(index.records[0], clahe=True), atol=1e-5)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
@pytest.mark.parametrize("cache", [True, False])
def test_bad_image_fails_naming_the_file_or_is_skipped(tiny_root, tmp_path, catalogue, caplog, cache, damage):
    """The dataset's own check (records handed to it directly, e.g. an index built before the damage)."""
    root = _copy(tiny_root, tmp_path)
    index = build_index(_cfg(root, tmp_path), catalogue, progress=False)
    bad = index.records[3].image_path
    data = bad.read_bytes()
    bad.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    cache_dir = tmp_path / "pixels" if cache else None
    if cache:  # the cache build finds it at construction
        with pytest.raises(DatasetError, match=bad.name) as err:
            _dataset(index, catalogue, cache_dir=cache_dir)
        assert "skip_bad_samples" in str(err.value)
    else:  # uncached and not skipping: the sample itself fails, naming the file
        ds = _dataset(index, catalogue)
        assert len(ds) == len(index)
        with pytest.raises(ImageReadError, match=bad.name):
            ds[3]
        return
    with caplog.at_level(logging.WARNING, logger="mmseg_text.data.dataset"):
        ds = _dataset(index, catalogue, cache_dir=cache_dir, skip_bad_samples=True)
    assert len(ds) == len(index) - 1 and [p for p, _ in ds.skipped] == [str(bad)]
    assert ("truncated" if damage == "truncated" else "not a readable image") in ds.skipped[0][1]
    assert bad.name in caplog.text
    names = [ds[i]["image_name"] for i in range(len(ds))]
    assert bad.name not in names and len(names) == len(index) - 1
    assert len(ds.facts) == len(ds.records) == len(ds.cache_paths)
    # the facts stay aligned with the records after dropping one
    for i, record in enumerate(ds.records):
        assert ds.facts[i] is index.facts[index.records.index(record)]


def test_truncated_image_is_skipped_without_a_cache(tiny_root, tmp_path, catalogue):
    root = _copy(tiny_root, tmp_path)
    bad = find_images(root, "train")[3].image_path
    bad.write_bytes(bad.read_bytes()[:2000])
    index = build_index(_cfg(root, tmp_path, skip_bad_samples=True), catalogue, progress=False)
    ds = _dataset(index, catalogue, skip_bad_samples=True)
    skipped = [p for p, _ in index.skipped + ds.skipped]
    assert skipped == [str(bad)] and len(ds) == 7


@pytest.mark.parametrize("cache", [True, False])
def test_labelled_record_without_json_is_an_error_or_skipped(tiny_root, tmp_path, catalogue, cache):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    records = list(index.records)
    records[5] = dataclasses.replace(records[5], json_path=None)
    cache_dir = tmp_path / "pixels" if cache else None

    def make(**kw):
        return SegmentationDataset(records, index.facts, class_names=catalogue.names, preprocess=_preprocess(),
                                   cache_dir=cache_dir, progress=False, **kw)

    with pytest.raises(DatasetError, match=records[5].image_path.name):
        make()
    ds = make(skip_bad_samples=True)
    assert len(ds) == len(records) - 1
    assert ds.skipped == [(str(records[5].image_path), "no annotation JSON (labelled images need one)")]
    assert records[5].image_id not in {r.image_id for r in ds.records}
    assert ds.facts == index.facts[:5] + index.facts[6:]
    # unlabelled, the same record is a sample without masks
    unlabelled = make(labelled=False)
    assert len(unlabelled) == len(records) and "masks" not in unlabelled[5] and "masks" in unlabelled[4]


@pytest.mark.parametrize("problem", ["empty_png", "no_json"])
def test_index_of_a_labelled_split_fails_on_bad_samples_or_leaves_them_out(tiny_root, tmp_path, catalogue, problem):
    root = _copy(tiny_root, tmp_path)
    record = find_images(root, "train")[5]
    if problem == "empty_png":
        record.image_path.write_bytes(b"")
    else:
        record.json_path.unlink()
    with pytest.raises(DatasetError, match=record.image_path.name):
        build_index(_cfg(root, tmp_path), catalogue, progress=False)
    index = build_index(_cfg(root, tmp_path, skip_bad_samples=True), catalogue, progress=False)
    assert len(index) == 7 and record.image_id not in {r.image_id for r in index.records}
    assert len(index.skipped) == 1 and record.image_path.name in index.skipped[0][1]
    assert index.skipped[0][0] == str(record.image_path)
    assert len(index.facts) == 7 and index.folds.shape == (7,)
    assert all(f.side in ("left", "right") for f in index.facts)  # the rest still has its geometry
    ds = _dataset(index, catalogue, cache_dir=tmp_path / "pixels")
    assert len(ds) == 7 and ds.skipped == []


def test_records_and_facts_must_be_parallel(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    with pytest.raises(ValueError, match="8 records but 7 facts"):
        SegmentationDataset(index.records, index.facts[:-1], class_names=catalogue.names, preprocess=_preprocess())


def test_seeded_augmentation_is_reproducible_per_epoch_and_index(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    specs = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "Affine", "rotate": [-20, 20], "p": 1.0},
             {"name": "RandomBrightnessContrast", "p": 1.0}]

    def make(seed):
        return _dataset(index, catalogue, cache_dir=tmp_path / "pixels", transforms=build_transforms(specs),
                        augment_seed=seed, caption_fn=lambda s: s["side"])

    a, b, other = make(5), make(5), make(6)
    n = len(index)
    first = [a[i] for i in range(n)]
    reverse = {i: b[i] for i in reversed(range(n))}  # another order (as another worker would load them)
    for i in range(n):
        torch.testing.assert_close(first[i]["image"], reverse[i]["image"], rtol=0, atol=0)
        torch.testing.assert_close(first[i]["masks"], reverse[i]["masks"], rtol=0, atol=0)
        assert first[i]["side"] == reverse[i]["side"] == first[i]["caption"]
    torch.testing.assert_close(a[1]["image"], first[1]["image"], rtol=0, atol=0)  # same epoch: same draw again
    assert any(not torch.equal(other[i]["image"], first[i]["image"]) for i in range(n))
    a.set_epoch(1)
    b.set_epoch(1)
    assert a.epoch == 1
    second = [a[i] for i in range(n)]
    assert all(not torch.equal(second[i]["image"], first[i]["image"]) for i in range(n))
    for i in range(n):
        torch.testing.assert_close(b[i]["image"], second[i]["image"], rtol=0, atol=0)
    a.set_epoch(0)
    torch.testing.assert_close(a[2]["image"], first[2]["image"], rtol=0, atol=0)
    # a mirrored draw swaps the side: over 2 epochs x 8 images with p=0.5 both outcomes occur
    flips = [s["side"] != f for s, f in zip(first + second, [f.side for f in index.facts] * 2)]
    assert any(flips) and not all(flips)


def test_collate_and_dataloader(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    train_index, val_index = index.fold_split(0)
    def caption(sample):
        return f"{sample['side']} hand"

    val = _dataset(val_index, catalogue, cache_dir=tmp_path / "pixels", caption_fn=caption)
    train = _dataset(train_index, catalogue, cache_dir=tmp_path / "pixels", caption_fn=caption,
                     transforms=build_transforms([{"name": "HorizontalFlip", "p": 0.5}]), augment_seed=0)
    batch = collate([val[0], val[1]])
    assert set(batch) == SAMPLE_KEYS | {"caption"}
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["masks"].shape == (2, 29, SIZE, SIZE)
    torch.testing.assert_close(batch["image"][1], val[1]["image"])
    assert batch["side"] == [val[0]["side"], val[1]["side"]]
    assert batch["orig_size"] == [(SOURCE, SOURCE), (SOURCE, SOURCE)]
    assert batch["person_id"] == [val_index.records[0].person_id, val_index.records[1].person_id]
    assert batch["caption"] == [f"{val[0]['side']} hand", f"{val[1]['side']} hand"]
    assert isinstance(batch["meta"], list) and batch["meta"][0]["bent_wrist"] in (True, False)
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate)
    first = next(iter(loader))
    assert first["image"].shape == (2, 3, SIZE, SIZE) and len(first["image_id"]) == 2


def test_unlabelled_test_images(tiny_root, tmp_path, catalogue):
    root = _copy(tiny_root, tmp_path)
    shutil.rmtree(root / "test" / "outputs_json")
    index = build_index(_cfg(root, tmp_path), catalogue, split="test", progress=False)
    assert index.split == "test" and index.folds is None and len(index) == 4
    assert all(f.side == "unknown" and f.meta["wrist_angle_deg"] is None and f.meta["bent_wrist"] is None
               for f in index.facts)
    assert not (tmp_path / "cache" / "derived").exists()  # nothing to derive from
    ds = _dataset(index, catalogue, cache_dir=tmp_path / "pixels", preprocess=_preprocess(mean=(0.5,), std=(0.5,)))
    assert ds.labelled is False and len(ds) == 4
    sample = ds[0]
    assert "masks" not in sample and sample["side"] == "unknown"
    assert sample["image"].shape == (1, SIZE, SIZE) and sample["person_id"] in (3, 5)
    assert sample["meta"]["wrist_angle_deg"] is None and sample["meta"]["bent_wrist"] is None
    metadata = load_metadata(root / "meta_data.xlsx")
    assert sample["meta"]["age"] == person_meta(metadata, sample["person_id"])["age"] is not None


# ----------------------------------------------------------------------------- the index
def test_index_facts_come_from_the_annotation_geometry(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    assert index.split == "train" and index.root == tiny_root and len(index.facts) == len(index.records) == 8
    assert index.metadata is not None and index.folds is not None and index.folds.shape == (8,)
    derived = derive_metadata(index.records, catalogue.hand_geometry).set_index("image_id")
    truth = _truth(tiny_root)
    for record, facts in zip(index.records, index.facts):
        assert isinstance(facts, ImageFacts) and set(facts.meta) == META_KEYS
        assert facts.side == derived.loc[record.image_id, "side"] == truth.loc[record.image_id, "side"]
        assert facts.meta["wrist_angle_deg"] == pytest.approx(derived.loc[record.image_id, "wrist_angle_deg"])
        assert facts.meta["bent_wrist"] is bool(derived.loc[record.image_id, "bent_wrist"])
    assert index.meta_by_image() == {r.image_id: f.meta for r, f in zip(index.records, index.facts)}
    assert index.person_by_image() == {r.image_id: r.person_id for r in index.records}
    assert any(f.meta["bent_wrist"] for f in index.facts)  # tiny_root has a bent wrist in train


def test_catalogue_without_hand_geometry_has_no_side_or_angle(tiny_root, tmp_path, monkeypatch):
    catalogue = _catalogue_without_geometry(tmp_path)
    monkeypatch.setattr(index_module, "derive_metadata", _no_derive)
    for split in ("train", "test"):
        index = build_index(_cfg(tiny_root, tmp_path), catalogue, split=split, progress=False)
        assert len(index) == (8 if split == "train" else 4)
        for facts in index.facts:
            assert facts.side == "unknown"
            assert facts.meta["wrist_angle_deg"] is None and facts.meta["bent_wrist"] is None
            assert facts.meta["sex"] in ("female", "male")  # the metadata table is still read
    assert not (tmp_path / "cache" / "derived").exists()
    # the folds still split by person, and samples say 'unknown'
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, progress=False)
    train, val = index.fold_split(0)
    assert len(train) + len(val) == 8
    ds = _dataset(index, catalogue, caption_fn=lambda s: s["side"])
    assert ds[0]["side"] == ds[0]["caption"] == "unknown" and ds[0]["masks"].shape == (29, SIZE, SIZE)


@pytest.mark.parametrize("num_folds", [2, 3, 4])
def test_fold_split_gives_disjoint_persons_covering_all_records(tiny_root, tmp_path, catalogue, num_folds):
    index = build_index(_cfg(tiny_root, tmp_path, num_folds=num_folds), catalogue, progress=False)
    assert set(index.folds.tolist()) == set(range(num_folds))
    all_ids = [r.image_id for r in index.records]
    val_ids: list[str] = []
    for fold in range(num_folds):
        train, val = index.fold_split(fold)
        train_p, val_p = {r.person_id for r in train.records}, {r.person_id for r in val.records}
        assert val_p and train_p and not train_p & val_p and train_p | val_p == {1, 2, 4, 6}
        assert sorted(r.image_id for r in train.records + val.records) == sorted(all_ids)
        assert (val.folds == fold).all() and (train.folds != fold).all()
        for sub in (train, val):  # facts stay parallel to the records
            assert len(sub.facts) == len(sub.records)
            for record, facts in zip(sub.records, sub.facts):
                assert facts is index.facts[all_ids.index(record.image_id)]
        val_ids += [r.image_id for r in val.records]
    assert sorted(val_ids) == sorted(all_ids)  # every record validates exactly once
    again = build_index(_cfg(tiny_root, tmp_path, num_folds=num_folds), catalogue, progress=False)
    np.testing.assert_array_equal(again.folds, index.folds)  # deterministic by data.split_seed


def test_no_folds_for_one_fold_or_the_test_split(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path, num_folds=1), catalogue, progress=False)
    assert index.folds is None
    with pytest.raises(ValueError, match="no folds"):
        index.fold_split(0)
    sub = index.select([3, 0])
    assert [r.image_id for r in sub.records] == [index.records[3].image_id, index.records[0].image_id]
    assert sub.facts == [index.facts[3], index.facts[0]] and sub.folds is None


def test_derived_frame_is_cached_and_reused(tiny_root, tmp_path, catalogue, monkeypatch):
    cfg = _cfg(tiny_root, tmp_path)
    first = build_index(cfg, catalogue, progress=False)
    assert cache_dir_of(cfg) == tmp_path / "cache"
    cached = list((tmp_path / "cache" / "derived").glob("train-*.csv"))
    assert len(cached) == 1
    frame = pd.read_csv(cached[0])
    assert list(frame.columns) == DERIVED_COLUMNS and len(frame) == 8
    monkeypatch.setattr(index_module, "derive_metadata", lambda *a, **k: pytest.fail("derived frame not reused"))
    again = build_index(cfg, catalogue, progress=False)
    assert again.facts == first.facts
    np.testing.assert_array_equal(again.folds, first.folds)
    # data.cache=false: computed every time, nothing written
    monkeypatch.setattr(index_module, "derive_metadata", derive_metadata)
    uncached = build_index(_cfg(tiny_root, tmp_path, cache=False, cache_dir=str(tmp_path / "other")), catalogue,
                           progress=False)
    assert uncached.facts == first.facts and not (tmp_path / "other").exists()


def test_derived_cache_misses_when_an_annotation_changes(tiny_root, tmp_path, catalogue):
    root = _copy(tiny_root, tmp_path)
    cfg = _cfg(root, tmp_path)
    build_index(cfg, catalogue, progress=False)
    record = find_images(root, "train")[0]
    record.json_path.write_text(record.json_path.read_text() + "\n")  # new size and mtime
    build_index(cfg, catalogue, progress=False)
    assert len(list((tmp_path / "cache" / "derived").glob("train-*.csv"))) == 2


def test_derived_meta_csv_is_used_when_given(tiny_root, tmp_path, catalogue, monkeypatch):
    records = find_images(tiny_root, "train")
    rows = [{"image_id": r.image_id, "person_id": r.person_id, "side": "left" if i % 2 else "right",
             "wrist_angle_deg": 10.0 + i, "bent_wrist": i == 3} for i, r in enumerate(records)]
    path = tmp_path / "derived.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    monkeypatch.setattr(index_module, "derive_metadata", _no_derive)
    index = build_index(_cfg(tiny_root, tmp_path, derived_meta=str(path)), catalogue, progress=False)
    for i, facts in enumerate(index.facts):
        assert facts.side == ("left" if i % 2 else "right")
        assert facts.meta["wrist_angle_deg"] == 10.0 + i and facts.meta["bent_wrist"] is (i == 3)
    assert not (tmp_path / "cache" / "derived").exists()
    # an image missing from the CSV is unknown, not an error
    pd.DataFrame(rows[1:]).to_csv(path, index=False)
    index = build_index(_cfg(tiny_root, tmp_path, derived_meta=str(path)), catalogue, progress=False)
    assert index.facts[0].side == "unknown" and index.facts[0].meta["wrist_angle_deg"] is None
    assert index.facts[1].side == "left"
    # a CSV without the derived columns, or no file at all, is an error naming it
    pd.DataFrame(rows).drop(columns=["wrist_angle_deg"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="wrist_angle_deg"):
        build_index(_cfg(tiny_root, tmp_path, derived_meta=str(path)), catalogue, progress=False)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_derived_csv(tmp_path / "missing.csv")


def test_test_split_index_has_no_folds_and_facts_from_its_annotations(tiny_root, tmp_path, catalogue):
    index = build_index(_cfg(tiny_root, tmp_path), catalogue, split="test", progress=False)
    truth = _truth(tiny_root)
    assert index.split == "test" and index.folds is None
    assert {r.person_id for r in index.records} == set(truth.loc[truth["split"] == "test", "person_id"]) == {3, 5}
    with pytest.raises(ValueError, match="no folds"):
        index.fold_split(0)
    derived = derive_metadata(index.records, catalogue.hand_geometry).set_index("image_id")
    assert len(derived) == len(index) == 4
    for record, facts in zip(index.records, index.facts):
        assert facts.side == derived.loc[record.image_id, "side"] == truth.loc[record.image_id, "side"]
        assert facts.meta["wrist_angle_deg"] == pytest.approx(derived.loc[record.image_id, "wrist_angle_deg"])
        assert facts.meta["bent_wrist"] is bool(truth.loc[record.image_id, "bent_wrist"])
    assert list((tmp_path / "cache" / "derived").glob("test-*.csv"))
    assert sum(f.meta["bent_wrist"] for f in index.facts) == 2
    # a labelled dataset of the test split has masks and sides
    ds = SegmentationDataset(index.records, index.facts, class_names=catalogue.names, preprocess=_preprocess(),
                             labelled=True, progress=False)
    sample = ds[0]
    assert "masks" in sample and sample["side"] == derived.loc[sample["image_id"], "side"]
