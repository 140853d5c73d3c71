from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmseg_text.data.layout import ImageRecord
from mmseg_text.data.splits import assign_folds, strata


def _frame(num_persons=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, num_persons + 1):
        sex = "female" if pid % 2 else "male"
        height = float(rng.normal(162 if sex == "female" else 174, 6))
        for hand in range(2):
            rows.append({"person_id": pid, "image_id": f"img{pid}_{hand}", "sex": sex, "height": height,
                         "age": float(rng.integers(19, 70)), "bent_wrist": bool(pid % 5 == 0 and hand == 0)})
    return pd.DataFrame(rows)



def fold_indices(data, num_folds: int, fold: int, seed: int = 0, **kwargs):
    """(train, val) positions of one fold, as DataIndex.fold_split takes them from assign_folds."""
    folds = assign_folds(data, num_folds, seed, **kwargs)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)

def test_folds_partition_images_and_keep_persons_together():
    frame = _frame()
    folds = assign_folds(frame, 5, seed=0)
    assert set(folds) == {0, 1, 2, 3, 4}
    assert (frame.assign(fold=folds).groupby("person_id")["fold"].nunique() == 1).all()
    for fold in range(5):
        train_idx, val_idx = fold_indices(frame, 5, fold, seed=0)
        assert len(train_idx) + len(val_idx) == len(frame)
        assert not set(frame.person_id[train_idx]) & set(frame.person_id[val_idx])
        assert 20 <= len(val_idx) <= 28  # 120 images / 5
        female = (frame.sex[val_idx] == "female").mean()
        assert 0.35 <= female <= 0.65  # stratified on sex


def test_deterministic_by_seed():
    frame = _frame()
    a = fold_indices(frame, 5, 2, seed=7)[1]
    b = fold_indices(frame, 5, 2, seed=7)[1]
    c = fold_indices(frame, 5, 2, seed=8)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_small_strata_fall_back_to_coarser_ones():
    frame = _frame(num_persons=6)
    labels = strata(frame, num_folds=3)
    # 3 women and 3 men: the finest strata are too small, sex alone holds 3 persons each
    assert set(labels) == {"female", "male"}
    train_idx, val_idx = fold_indices(frame, 3, 0, seed=0)
    assert len(set(frame.person_id[val_idx])) == 2
    assert set(frame.sex[val_idx]) == {"female", "male"}


def test_missing_metadata_still_splits_and_too_few_persons_is_an_error():
    frame = pd.DataFrame({"person_id": [1, 1, 2, 2, 3, 3]})
    train_idx, val_idx = fold_indices(frame, 3, 1, seed=0)
    assert len(val_idx) == 2 and frame.person_id[val_idx].nunique() == 1
    with pytest.raises(ValueError, match="cannot make 4 folds from 3 persons"):
        fold_indices(frame, 4, 0)


def test_records_with_metadata_and_derived_frames():
    records = [ImageRecord(Path(f"/x/ID{p:03d}/image{p}{h}.png"), None, p, "train")
               for p in range(1, 11) for h in range(2)]
    meta = pd.DataFrame({"sex": ["female", "male"] * 5, "height": np.linspace(150, 190, 10), "age": 30.0},
                        index=pd.Index(range(1, 11), name="person_id"))
    derived = pd.DataFrame({"image_id": [r.image_id for r in records], "bent_wrist": [False] * 20})
    train_idx, val_idx = fold_indices(records, 2, 0, seed=0, metadata=meta, derived=derived)
    val_persons = {records[i].person_id for i in val_idx}
    assert len(val_persons) == 5 and not val_persons & {records[i].person_id for i in train_idx}
    assert sum(meta.loc[list(val_persons), "sex"] == "female") in (2, 3)
