"""Damaged checkpoints and failed saves: one clear error naming the file, nothing half-written left behind."""
from __future__ import annotations

import errno
import os

import pytest

from mmseg_text.config import Config, ModelConfig
from mmseg_text.io import DiskWriteError, write_failure
from mmseg_text.models import build_model, load_model, save_model_dir
from mmseg_text.models.build import CONFIG_FILE, META_FILE, WEIGHTS_FILE, ModelDirError


def _tiny():
    model_cfg = ModelConfig(encoder="resnet18", decoder_channels=[8, 8, 8, 8, 8], conditioning="none")
    cfg = Config()
    cfg.model = model_cfg
    return build_model(model_cfg, num_classes=3, image_size=64), cfg.to_dict()


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


@pytest.fixture
def checkpoint(tmp_path, tiny):
    model, cfg = tiny
    return save_model_dir(tmp_path / "best", model, cfg)


def test_truncated_weights_are_a_damaged_checkpoint_naming_the_file(checkpoint):
    weights = checkpoint / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelDirError) as err:
        load_model(checkpoint)
    assert isinstance(err.value, ValueError)
    assert str(err.value) == (f"{weights}: the checkpoint is damaged (truncated or corrupt: Error while deserializing "
                              "header: incomplete metadata, file not fully covered); re-export it or use another "
                              "checkpoint")
    weights.write_bytes(b"")
    with pytest.raises(ModelDirError, match=f"^{weights}: the checkpoint is damaged .*header too small"):
        load_model(checkpoint)


def test_corrupt_config_and_meta_name_their_file(checkpoint):
    config = checkpoint / CONFIG_FILE
    good = config.read_text()
    config.write_text("model: {encoder: resnet18\n  bad: [")
    with pytest.raises(ModelDirError, match=f"^{config}: the checkpoint is damaged: the YAML does not parse"):
        load_model(checkpoint)
    config.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelDirError, match=f"^{config}: the checkpoint is damaged: the YAML does not parse"):
        load_model(checkpoint)
    config.write_text(good)
    meta = checkpoint / META_FILE
    meta.write_text('{"format_version": 1, "num_cl')
    with pytest.raises(ModelDirError, match=f"^{meta}: the checkpoint is damaged: the JSON does not parse"):
        load_model(checkpoint)
    meta.write_text('{"format_version": 1}')
    with pytest.raises(ModelDirError, match=rf"^{meta}: the checkpoint is damaged: no \['num_classes', "):
        load_model(checkpoint)


def test_save_checkpoint_disk_full_leaves_no_temp_folder(tmp_path, tiny, monkeypatch):
    model, cfg = tiny

    def full(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)  # a partial file first, as a real full disk does
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mmseg_text.models.build.save_file", full)
    with pytest.raises(DiskWriteError) as err:
        save_model_dir(tmp_path / "best", model, cfg)
    assert err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"cannot save checkpoint to {tmp_path / 'best'}: no space left on device")
    assert os.listdir(tmp_path) == []


def test_save_checkpoint_safetensors_io_text_is_classified(tmp_path, tiny, monkeypatch):
    model, cfg = tiny
    from safetensors import SafetensorError

    def readonly(state, path, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)")

    monkeypatch.setattr("mmseg_text.models.build.save_file", readonly)
    with pytest.raises(DiskWriteError, match=f"^cannot save checkpoint to {tmp_path / 'best'}: read-only file system"):
        save_model_dir(tmp_path / "best", model, cfg)
    assert os.listdir(tmp_path) == []


def test_save_checkpoint_into_read_only_folder(tmp_path, tiny, monkeypatch):
    model, cfg = tiny
    out = tmp_path / "run"
    out.mkdir()
    os.chmod(out, 0o555)
    try:
        if os.access(out, os.W_OK):  # running as root: the mode bits do not stop us, simulate the error
            def denied(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(out))

            monkeypatch.setattr("mmseg_text.models.build.tempfile.mkdtemp", denied)
        with pytest.raises(DiskWriteError) as err:
            save_model_dir(out / "best", model, cfg)
    finally:
        os.chmod(out, 0o755)
    assert err.value.errno == errno.EACCES
    assert str(err.value).startswith(f"cannot save checkpoint to {out / 'best'}: permission denied")
    assert os.listdir(out) == []


def test_write_failure_leaves_other_errors_alone(tmp_path):
    assert write_failure(RuntimeError("CUDA out of memory"), tmp_path) is None
    assert write_failure(OSError(errno.EIO, "I/O error"), tmp_path) is None
    assert write_failure(TypeError("not JSON serialisable"), tmp_path) is None
    quota = write_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path / "x", "training state")
    assert quota.errno == errno.EDQUOT and str(quota).startswith(f"cannot save training state to {tmp_path / 'x'}: "
                                                                 "disk quota exceeded")


def test_find_image_files_counts_what_it_does_not_read(tmp_path, caplog):
    import logging

    from mmseg_text.inference.image_files import find_image_files

    for rel in ("ID001/a.png", "ID001/b.PNG", "ID002/c.dcm", "ID002/c.jpg", "ID002/notes.txt", "ID003/d.json",
                "ID003/e.json", ".hidden/x.txt", "ID001/.DS_Store"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="mmseg_text.inference.image_files"):
        files = find_image_files(tmp_path)
    assert files == [tmp_path / "ID001/a.png", tmp_path / "ID001/b.PNG", tmp_path / "ID002/c.dcm"]
    assert [r.getMessage() for r in caplog.records] == [
        f"--images {tmp_path}: 4 file(s) that are not PNG/DCM images are not read, e.g. "
        "ID002/c.jpg, ID002/notes.txt, ID003/d.json ..."]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmseg_text.inference.image_files"):
        assert find_image_files(tmp_path / "ID001") == [tmp_path / "ID001/a.png", tmp_path / "ID001/b.PNG"]
    assert caplog.records == []
    with pytest.raises(FileNotFoundError, match=r"no images \(\.png, \.dcm\) found"):
        find_image_files(tmp_path / "ID003")
