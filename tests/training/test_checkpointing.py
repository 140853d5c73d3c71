"""Training-state checkpoints: resume falls back past a damaged checkpoint, failed saves leave nothing behind."""
from __future__ import annotations

import errno
import logging
import os
import shutil

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import nn

from mmseg_text.training.state import (TrainingStateError, clean_stale_temporaries, list_checkpoints,
                                             load_latest_state, read_trainer_state, save_training_state)
from mmseg_text.io import DiskWriteError


@pytest.fixture
def acc_model():
    """A real CPU Accelerator with a prepared nn.Linear and AdamW (one step taken, so Adam has state)."""
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    yield accelerator, model, optimizer
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _step(model, optimizer):
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def _two_states(tmp_path, accelerator, model, optimizer):
    """step 1 and step 2 saved; returns the weights of each."""
    weights = []
    for step in (1, 2):
        _step(model, optimizer)
        weights.append(model.weight.detach().clone())
        save_training_state(accelerator, tmp_path, step, {"progress": {"step": step}}, keep=3)
    return weights


def test_latest_state_loads_when_intact(tmp_path, acc_model):
    accelerator, model, optimizer = acc_model
    w1, w2 = _two_states(tmp_path, accelerator, model, optimizer)
    _step(model, optimizer)
    assert load_latest_state(accelerator, tmp_path, "latest") == tmp_path / "checkpoints" / "step_00000002"
    assert torch.equal(model.weight, w2)
    assert load_latest_state(accelerator, tmp_path, None) is None


def test_corrupt_optimizer_falls_back_to_previous_checkpoint(tmp_path, acc_model, caplog):
    accelerator, model, optimizer = acc_model
    w1, w2 = _two_states(tmp_path, accelerator, model, optimizer)
    older, newest = list_checkpoints(tmp_path)
    bad = newest / "optimizer.bin"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated, as by a kill mid-copy
    with caplog.at_level(logging.WARNING, logger="mmseg_text.training.state"):
        found = load_latest_state(accelerator, tmp_path, "latest")
    assert found == older
    assert read_trainer_state(found)["progress"]["step"] == 1
    assert torch.equal(model.weight, w1)  # the older state was loaded over the partly loaded newer one
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"checkpoint {newest} is damaged: {bad} (" in m and f"previous checkpoint {older}" in m
               for m in messages), messages


def test_corrupt_weights_in_every_checkpoint_is_an_error_naming_the_file(tmp_path, acc_model):
    accelerator, model, optimizer = acc_model
    _two_states(tmp_path, accelerator, model, optimizer)
    older, newest = list_checkpoints(tmp_path)
    (newest / "optimizer.bin").write_bytes(b"garbage")
    (older / "model.safetensors").write_bytes((older / "model.safetensors").read_bytes()[:40])
    with pytest.raises(TrainingStateError) as err:
        load_latest_state(accelerator, tmp_path, "latest")
    message = str(err.value)
    assert f"{newest / 'optimizer.bin'} (not a complete torch archive" in message
    assert f"{older / 'model.safetensors'} (SafetensorError" in message
    assert "no earlier complete checkpoint is left" in message
    # an explicit path is not silently replaced by another checkpoint
    with pytest.raises(TrainingStateError, match=f"--resume {newest}.*{newest / 'optimizer.bin'}"):
        load_latest_state(accelerator, tmp_path, str(newest))


def test_corrupt_trainer_state_is_damage_too(tmp_path, acc_model):
    accelerator, model, optimizer = acc_model
    _two_states(tmp_path, accelerator, model, optimizer)
    older, newest = list_checkpoints(tmp_path)
    (newest / "trainer_state.json").write_text('{"progress": ')
    assert load_latest_state(accelerator, tmp_path, "latest") == older


def test_load_error_without_damage_is_reraised(tmp_path, acc_model):
    accelerator, model, optimizer = acc_model
    _two_states(tmp_path, accelerator, model, optimizer)
    other = Accelerator(cpu=True)
    bigger, opt = other.prepare(nn.Linear(5, 3), torch.optim.AdamW(nn.Linear(5, 3).parameters()))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_latest_state(other, tmp_path, "latest")  # a different model: not a damaged checkpoint


def test_disk_full_while_saving_removes_the_partial_folder(tmp_path, acc_model, monkeypatch):
    accelerator, model, optimizer = acc_model

    def full_disk(directory, *args, **kwargs):
        with open(os.path.join(directory, "optimizer.bin"), "wb") as f:
            f.write(b"\0" * 1000)  # a partial file, as before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accelerator, "save_state", full_disk)
    with pytest.raises(DiskWriteError) as err:
        save_training_state(accelerator, tmp_path, 5, {"progress": {}}, keep=2)
    target = tmp_path / "checkpoints" / "step_00000005"
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"cannot save training state to {target}: no space left on device")
    assert os.listdir(tmp_path / "checkpoints") == []


def test_torch_writer_runtime_error_on_a_full_disk(tmp_path, acc_model, monkeypatch):
    accelerator, model, optimizer = acc_model

    def torch_writer_fails(directory, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 38273024 vs 38272912")

    monkeypatch.setattr(accelerator, "save_state", torch_writer_fails)
    monkeypatch.setattr("mmseg_text.io.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 4096))
    with pytest.raises(DiskWriteError, match=r"step_00000007: no space left on device .*inline_container"):
        save_training_state(accelerator, tmp_path, 7, {"progress": {}}, keep=2)
    assert os.listdir(tmp_path / "checkpoints") == []
    # other RuntimeErrors are not disguised as disk problems, and still leave nothing behind
    monkeypatch.setattr(accelerator, "save_state", lambda d: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="^boom$"):
        save_training_state(accelerator, tmp_path, 8, {"progress": {}}, keep=2)
    assert os.listdir(tmp_path / "checkpoints") == []


def test_read_only_output_dir_is_permission_denied(tmp_path, acc_model, monkeypatch):
    accelerator, model, optimizer = acc_model
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    os.chmod(out / "checkpoints", 0o555)
    try:
        if os.access(out / "checkpoints", os.W_OK):  # root ignores the mode bits: simulate the error
            real_mkdir = type(out).mkdir

            def denied(self, *args, **kwargs):
                if self.name.startswith(".tmp_step_"):
                    raise PermissionError(errno.EACCES, "Permission denied", str(self))
                return real_mkdir(self, *args, **kwargs)

            monkeypatch.setattr(type(out), "mkdir", denied)
        with pytest.raises(DiskWriteError) as err:
            save_training_state(accelerator, out, 3, {"progress": {}}, keep=2)
    finally:
        os.chmod(out / "checkpoints", 0o755)
    assert err.value.errno == errno.EACCES
    assert f"{out / 'checkpoints' / 'step_00000003'}: permission denied" in str(err.value)
    assert os.listdir(out / "checkpoints") == []


def test_clean_stale_temporaries_removes_only_leftover_folders(tmp_path, caplog):
    stale = [tmp_path / "checkpoints" / ".tmp_step_00000004", tmp_path / ".best.k2j3h4.tmp"]
    for path in stale:
        path.mkdir(parents=True)
    (stale[0] / "optimizer.bin").write_bytes(b"partial")
    kept = [tmp_path / "checkpoints" / "step_00000002", tmp_path / "best", tmp_path / ".other.tmp"]
    for path in kept:
        path.mkdir(parents=True)
    (tmp_path / ".best.file.tmp").write_text("a file, not a folder")
    with caplog.at_level(logging.WARNING, logger="mmseg_text.training.state"):
        removed = clean_stale_temporaries(tmp_path)
    assert removed == [stale[0], stale[1]]
    assert not any(p.exists() for p in stale) and all(p.is_dir() for p in kept)
    assert (tmp_path / ".best.file.tmp").is_file()
    assert [r.getMessage() for r in caplog.records] == [
        f"removed {p}, the leftover of an interrupted save" for p in stale]
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_rotation_keeps_the_newest_checkpoints(tmp_path, acc_model):
    accelerator, model, optimizer = acc_model
    for step in range(1, 5):
        _step(model, optimizer)
        save_training_state(accelerator, tmp_path, step, {"progress": {"step": step}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000003", "step_00000004"]
    save_training_state(accelerator, tmp_path, 5, {"progress": {"step": 5}}, keep=0)  # 0 keeps every one
    assert len(list_checkpoints(tmp_path)) == 3


def test_a_kill_between_the_renames_of_an_export_restores_the_previous_best(tmp_path):
    # save_model_dir moves best/ aside to .best.old-*, then the new copy in: killed between the two renames,
    # the run has no best/ but its previous export in .best.old-*, and the unfinished new one in .best.*.tmp.
    old = tmp_path / ".best.old-1a2b3c4d"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"previous")
    (tmp_path / ".best.x1y2.tmp").mkdir()
    removed = clean_stale_temporaries(tmp_path)
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == b"previous"
    assert [p.name for p in removed] == [".best.x1y2.tmp"] and not old.exists()
    # with best/ in place, a leftover .best.old-* is only a leftover
    stale = tmp_path / ".best.old-99999999"
    stale.mkdir()
    assert clean_stale_temporaries(tmp_path) == [stale] and (tmp_path / "best").is_dir()
