import json
import os

import cv2
import numpy as np
import pytest

from mmseg_text.data.cache import (build_cache, cache_key, cache_path, load_cached, load_or_build,
                                   preprocess_sample)
from mmseg_text.data.layout import find_images

NAMES = ("finger-1", "finger-2", "Radius")


def _write_sample(root, pid, stem, size=64, labelled=True):
    image_dir = root / "train" / "DCM" / f"ID{pid:03d}"
    image_dir.mkdir(parents=True, exist_ok=True)
    image = np.tile(np.arange(size, dtype=np.uint8) * 3, (size, 1))
    cv2.imwrite(str(image_dir / f"{stem}.png"), image)
    if labelled:
        json_dir = root / "train" / "outputs_json" / f"ID{pid:03d}"
        json_dir.mkdir(parents=True, exist_ok=True)
        anns = [{"label": "finger-1", "points": [[8, 8], [23, 8], [23, 23], [8, 23]]},
                {"label": "Radius", "points": [[32, 40], [60, 40], [60, 60], [32, 60]]},
                {"label": "finger-2", "points": [[16, 16], [30, 16], [30, 30]]}]
        (json_dir / f"{stem}.json").write_text(json.dumps({"annotations": anns}))


@pytest.fixture
def root(tmp_path):
    _write_sample(tmp_path, 1, "image1000000000001_R")
    _write_sample(tmp_path, 1, "image1000000000002_L")
    _write_sample(tmp_path, 2, "image1000000000003")
    return tmp_path


def test_build_then_reuse_and_content_matches_direct_path(root, tmp_path):
    records = find_images(root, "train")
    cache_dir = tmp_path / "cache"
    report = build_cache(records, cache_dir=cache_dir, image_size=32, class_names=NAMES, workers=0, progress=False)
    assert (report.built, report.reused, report.failed) == (3, 0, [])
    assert all(p is not None and p.parent == cache_dir / "32" and p.suffix == ".npy" for p in report.paths)
    again = build_cache(records, cache_dir=cache_dir, image_size=32, class_names=NAMES, workers=0, progress=False)
    assert (again.built, again.reused) == (0, 3)

    cached = load_cached(report.paths[0])
    direct = preprocess_sample(records[0], 32, NAMES)
    assert cached.orig_size == (64, 64) and cached.image.shape == (32, 32) and cached.image.dtype == np.uint8
    np.testing.assert_array_equal(cached.image, direct.image)
    np.testing.assert_array_equal(cached.masks, direct.masks)
    assert cached.masks.dtype == bool and cached.masks.shape == (3, 32, 32)
    # finger-1 covers source 8..23 -> about 4..11 at half size; Radius 32..60 -> 16..30
    assert cached.masks[0, 7, 7] and not cached.masks[0, 20, 20]
    assert cached.masks[2, 25, 25] and not cached.masks[2, 5, 5]
    # INTER_AREA of a horizontal ramp 0,3,6,..: pixel j averages source columns 2j, 2j+1
    assert cached.image[0, 10] == round((60 + 63) / 2)


def test_json_mtime_change_invalidates_the_entry(root, tmp_path):
    records = find_images(root, "train")
    cache_dir = tmp_path / "cache"
    first = build_cache(records, cache_dir=cache_dir, image_size=32, class_names=NAMES, workers=0, progress=False)
    json_path = records[1].json_path
    st = os.stat(json_path)
    os.utime(json_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = build_cache(records, cache_dir=cache_dir, image_size=32, class_names=NAMES, workers=0, progress=False)
    assert (second.built, second.reused) == (1, 2)
    assert second.paths[1] != first.paths[1] and second.paths[0] == first.paths[0]


def test_key_depends_on_image_bytes_size_and_classes(root):
    record = find_images(root, "train")[0]
    key = cache_key(record, 32, NAMES)
    assert cache_key(record, 64, NAMES) != key
    assert cache_key(record, 32, NAMES[:2]) != key
    image = cv2.imread(str(record.image_path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(record.image_path), np.pad(image, 1))  # a different file size
    assert cache_key(record, 32, NAMES) != key
    assert cache_path("/c", record, 32, NAMES).parent.name == "32"


def test_bad_samples_are_reported_with_their_file(root, tmp_path):
    records = find_images(root, "train")
    data = records[2].image_path.read_bytes()
    records[2].image_path.write_bytes(data[: len(data) // 2])
    records[0].json_path.write_text("{not json")
    report = build_cache(records, cache_dir=tmp_path / "cache", image_size=32, class_names=NAMES, workers=0,
                         progress=False)
    assert report.built == 1 and report.paths[0] is None and report.paths[2] is None
    failed = dict(report.failed)
    assert str(records[2].image_path) in failed and "truncated" in failed[str(records[2].image_path)]
    assert "image1000000000001_R.json" in failed[str(records[0].image_path)]
    records[1].image_path.unlink()  # vanished after the listing: reported, not a crash
    gone = build_cache(records, cache_dir=tmp_path / "cache", image_size=32, class_names=NAMES, workers=0,
                       progress=False)
    assert gone.paths[1] is None and "FileNotFoundError" in dict(gone.failed)[str(records[1].image_path)]


def test_parallel_build_matches_serial(root, tmp_path):
    records = find_images(root, "train")
    serial = build_cache(records, cache_dir=tmp_path / "a", image_size=16, class_names=NAMES, workers=0, progress=False)
    parallel = build_cache(records, cache_dir=tmp_path / "b", image_size=16, class_names=NAMES, workers=2,
                           progress=False)
    assert parallel.built == 3
    for a, b in zip(serial.paths, parallel.paths):
        assert a.name == b.name
        np.testing.assert_array_equal(load_cached(a).masks, load_cached(b).masks)


def test_unlabelled_sample_and_rebuild_of_deleted_entry(tmp_path):
    _write_sample(tmp_path, 3, "image1000000000009", labelled=False)
    record = find_images(tmp_path, "train")[0]
    path = cache_path(tmp_path / "cache", record, 32, NAMES)
    sample = load_or_build(path, record, 32, NAMES)  # missing entry: computed and stored
    assert sample.masks is None and path.exists()
    assert load_cached(path).masks is None and load_cached(path).orig_size == (64, 64)


def test_read_only_cache_dir_is_one_error_naming_it(root, tmp_path, monkeypatch):
    import errno

    from mmseg_text.data.cache import CacheDirError

    records = find_images(root, "train")
    cache_dir = tmp_path / "ro_cache"
    cache_dir.mkdir()
    os.chmod(cache_dir, 0o555)
    try:
        if os.access(cache_dir, os.W_OK):  # root ignores mode bits: a read-only file system, simulated
            real_mkdir = type(cache_dir).mkdir

            def read_only(self, *args, **kwargs):
                if cache_dir in self.parents or self == cache_dir:
                    raise OSError(errno.EROFS, "Read-only file system", str(self))
                return real_mkdir(self, *args, **kwargs)

            monkeypatch.setattr(type(cache_dir), "mkdir", read_only)
        with pytest.raises(CacheDirError) as err:
            build_cache(records, cache_dir=cache_dir, image_size=32, class_names=NAMES, workers=0, progress=False)
    finally:
        os.chmod(cache_dir, 0o755)
    message = str(err.value)
    assert message.startswith(f"preprocessing cache directory {cache_dir / '32'} cannot be written (")
    assert "set data.cache_dir=<a writable path>" in message
    assert err.value.errno in (errno.EROFS, errno.EACCES) and isinstance(err.value, OSError)


def test_full_disk_while_building_names_the_cache_dir(root, tmp_path, monkeypatch):
    import errno

    from mmseg_text.data.cache import CacheDirError

    records = find_images(root, "train")

    def full(path, sample):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mmseg_text.data.cache.write_cached", full)
    with pytest.raises(CacheDirError, match=rf"^preprocessing cache directory {tmp_path / 'c' / '32'} cannot be "
                                            r"written \(no space left on device\); set data\.cache_dir="):
        build_cache(records, cache_dir=tmp_path / "c", image_size=32, class_names=NAMES, workers=0, progress=False)


def test_truncated_entry_is_rebuilt_with_a_warning(root, tmp_path, caplog):
    import logging

    from mmseg_text.data.cache import CacheCorruptError

    records = find_images(root, "train")
    report = build_cache(records, cache_dir=tmp_path / "c", image_size=32, class_names=NAMES, workers=0, progress=False)
    path = report.paths[0]
    good = load_cached(path)
    path.write_bytes(path.read_bytes()[:200])  # truncated, as by a kill or a full disk
    with pytest.raises(CacheCorruptError) as err:
        load_cached(path)
    assert str(err.value).startswith(f"{path}: damaged preprocessing cache file (ValueError: ")
    assert str(err.value).endswith(f"delete it (or the whole cache directory {tmp_path / 'c'}) to rebuild it")
    with caplog.at_level(logging.WARNING, logger="mmseg_text.data.cache"):
        sample = load_or_build(path, records[0], 32, NAMES)
    np.testing.assert_array_equal(sample.image, good.image)
    np.testing.assert_array_equal(sample.masks, good.masks)
    assert [r.getMessage() for r in caplog.records] == [f"{err.value} -- rebuilt it from {records[0].image_path}"]
    np.testing.assert_array_equal(load_cached(path).masks, good.masks)  # repaired on disk too
    path.write_bytes(b"")  # empty file: EOFError inside numpy, same treatment
    assert load_or_build(path, records[0], 32, NAMES).orig_size == (64, 64)


def test_damaged_entry_without_its_source_is_an_error_naming_both(root, tmp_path):
    from mmseg_text.data.cache import CacheCorruptError

    records = find_images(root, "train")
    report = build_cache(records, cache_dir=tmp_path / "c", image_size=32, class_names=NAMES, workers=0, progress=False)
    path = report.paths[1]
    path.write_bytes(path.read_bytes()[:100])
    records[1].image_path.unlink()
    with pytest.raises(CacheCorruptError) as err:
        load_or_build(path, records[1], 32, NAMES)
    message = str(err.value)
    assert message.startswith(f"{path}: damaged preprocessing cache file")
    assert f"delete it (or the whole cache directory {tmp_path / 'c'}) to rebuild it; it cannot be rebuilt now:" in message
    assert str(records[1].image_path) in message
