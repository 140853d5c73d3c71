"""The 'shapes' generator writes a second, non-hand anatomy in the real on-disk layout: the readers
(layout, annotations, masks, catalogue, metadata) take it as they take the hand, and the same seed
gives the same bytes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.layout import find_images
from mmseg_text.data.masks import polygons_to_masks
from mmseg_text.data.metadata import load_metadata
from mmseg_text.data.synthetic import write_shapes_dataset

IDS, SIZE, NUM_CLASSES, TEST_IDS = 6, 96, 5, 2
NAMES = ("disc", "square", "triangle", "ring-segment", "bar")
IMAGE_NAME = re.compile(r"^image\d{13}\.png$")
JSON_KEYS = ["annotations", "attributes", "file_id", "filename", "parent_path", "last_modifier_id",
             "metadata", "last_workers"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    out = write_shapes_dataset(root, ids=IDS, size=SIZE, num_classes=NUM_CLASSES, seed=0, test_ids=TEST_IDS)
    assert out == root
    return root


def _pngs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_reads_back_with_interleaved_ids_and_a_json_per_image(shapes_root):
    train = find_images(shapes_root, "train", require_json=True)
    test = find_images(shapes_root, "test", require_json=True)
    assert sorted({r.person_id for r in train}) == [1, 2, 4, 5]
    assert sorted({r.person_id for r in test}) == [3, 6]
    assert len(train) == 8 and len(test) == 4  # two images per person
    for record in train + test:
        assert IMAGE_NAME.match(record.image_name), record.image_name
        assert record.json_path is not None and record.json_path.stem == record.image_id
        image = cv2.imread(str(record.image_path), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE)  # single-channel grayscale


def test_catalogue_has_the_shape_classes_and_no_hand_geometry(shapes_root):
    catalogue = load_catalogue(shapes_root / "shapes.yaml")
    assert len(catalogue) == NUM_CLASSES
    assert catalogue.names == NAMES
    assert catalogue.groups == ("round", "angular", "angular", "round", "angular")
    assert all(d and d != n for d, n in zip(catalogue.descriptions, catalogue.names))
    assert set(yaml.safe_load((shapes_root / "shapes.yaml").read_text())) == {"name", "classes"}  # no derived:
    assert getattr(catalogue, "hand_geometry", None) is None


def test_every_json_has_the_real_schema_and_exactly_the_catalogue_labels(shapes_root):
    records = find_images(shapes_root, "train") + find_images(shapes_root, "test")
    for record in records:
        doc = json.loads(record.json_path.read_text(encoding="utf-8"))
        assert list(doc) == JSON_KEYS
        assert [a["type"] for a in doc["annotations"]] == ["poly_seg"] * NUM_CLASSES
        assert doc["parent_path"].endswith(f"/ID{record.person_id:03d}")
        polygons = load_annotation(record.json_path, known_labels=NAMES, image_size=(SIZE, SIZE))
        assert tuple(polygons) == NAMES


def test_masks_are_non_empty_bright_and_sometimes_overlap(shapes_root):
    overlaps = 0
    for record in find_images(shapes_root, "train") + find_images(shapes_root, "test"):
        masks = polygons_to_masks(load_annotation(record.json_path), NAMES, (SIZE, SIZE))
        image = cv2.imread(str(record.image_path), cv2.IMREAD_GRAYSCALE).astype(float)
        area = masks.sum(axis=(1, 2))
        assert (area >= 20).all(), (record.image_name, area.tolist())
        background = image[~masks.any(0)]
        assert background.mean() < 40  # dark noisy background
        assert background.std() > 2
        for k in range(NUM_CLASSES):
            assert image[masks[k]].mean() > background.mean() + 80, (record.image_name, NAMES[k])
        overlaps += int((masks.sum(0) >= 2).any())
    assert overlaps >= 1  # multi-label: some pixels carry two classes


def test_metadata_csv_has_one_row_per_person(shapes_root):
    meta = load_metadata(shapes_root / "meta_data.csv")
    assert list(meta.index) == list(range(1, IDS + 1))
    assert set(meta["sex"]) <= {"female", "male"}
    assert meta[["age", "weight", "height"]].notna().all().all()
    assert meta["age"].between(19, 69).all() and meta["height"].between(150, 187).all()


def test_same_seed_same_bytes_and_another_seed_differs(shapes_root, tmp_path):
    again = write_shapes_dataset(tmp_path / "a", ids=IDS, size=SIZE, num_classes=NUM_CLASSES, seed=0,
                                 test_ids=TEST_IDS)
    first = _pngs(shapes_root)
    assert len(first) == 2 * IDS and _pngs(again) == first
    for name in ("meta_data.csv", "shapes.yaml"):
        assert (again / name).read_bytes() == (shapes_root / name).read_bytes()
    other = write_shapes_dataset(tmp_path / "b", ids=IDS, size=SIZE, num_classes=NUM_CLASSES, seed=1,
                                 test_ids=TEST_IDS)
    assert sorted(_pngs(other).values()) != sorted(first.values())


def test_more_classes_and_invalid_arguments(tmp_path):
    root = write_shapes_dataset(tmp_path / "eight", ids=3, size=64, num_classes=8, test_ids=1)
    catalogue = load_catalogue(root / "shapes.yaml")
    assert len(catalogue) == 8 and len(set(catalogue.names)) == 8
    record = find_images(root, "test", require_json=True)[0]
    assert record.person_id == 3
    assert len(load_annotation(record.json_path, known_labels=catalogue.names, image_size=(64, 64))) == 8
    with pytest.raises(ValueError, match="num_classes"):
        write_shapes_dataset(tmp_path / "x", num_classes=99)
    with pytest.raises(ValueError, match="test_ids"):
        write_shapes_dataset(tmp_path / "y", ids=2, test_ids=2)
