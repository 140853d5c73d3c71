"""Training end to end on the tiny synthetic set: checkpoints, kill + resume, 2-process DDP."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmseg_text.config import load_config
from mmseg_text.training.state import list_checkpoints, read_trainer_state

from tests.runs import logged_losses, script, script_env

pytestmark = pytest.mark.slow


def _train(config: Path, *overrides: str, launcher: list[str] | None = None, timeout: int = 600) -> dict:
    cmd = (launcher or script("train.py")) + ["--config", str(config), *overrides]
    proc = subprocess.run(cmd, env=script_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("output_dir="))
    return json.loads((Path(out_dir) / "summary.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tiny_root, tmp_path_factory):
    from tests.runs import tiny_config_dict
    import yaml

    base = tmp_path_factory.mktemp("uninterrupted")
    config = base / "tiny.yaml"
    doc = tiny_config_dict(tiny_root, base / "run", base / "cache")
    doc["train"]["ema_decay"] = 0.9  # the EMA state is saved with save_state: the resumed run must match exactly
    config.write_text(yaml.safe_dump(doc))
    summary = _train(config, f"output_dir={base / 'run'}")
    return config, base / "run", summary


def test_training_writes_summary_best_checkpoint_and_learns(uninterrupted):
    _, run, summary = uninterrupted
    assert summary["steps"] == 6 and "loss_history" not in summary  # the curve is in the tracker
    losses = logged_losses(run)
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert summary["final_train_loss"] == pytest.approx(losses[-1], rel=1e-5)  # log_every=1
    assert losses[-1] < losses[0]  # it learns something in 6 steps
    last = summary["last"]
    assert 0.0 < last["mean_dice"] <= 1.0
    assert [step for step, _ in summary["val_curve"]] == [3, 6]  # eval_every=3: the learning curve
    assert summary["val_curve"][-1][1] == pytest.approx(last["mean_dice"])
    assert set(last["grouped"]) == {"finger", "carpal", "forearm"}
    assert len(last["per_class"]) == 29
    # calibration counts every validation pixel of every class once (64 x 64 images)
    assert sum(last["calibration"]["reliability"]["pixels"]) == last["num_images"] * 29 * 64 * 64
    assert 0.0 <= last["calibration"]["mean_ece"] <= 1.0
    best = run / "best"
    weights = load_file(best / "model.safetensors")
    assert any("gate" in k for k in weights)  # the text-conditioned model was saved
    # the gate trajectory: tanh g of every gate at each evaluation, the last one as saved in best/ (step 6 is best
    # or not; the summary's last entry is the final model's)
    gate_keys = sorted(k for k in weights if k.endswith("gate"))
    assert [step for step, _ in summary["gate_curve"]] == [3, 6]
    assert all(len(gates) == len(gate_keys) for _, gates in summary["gate_curve"])
    assert any(abs(g) > 1e-4 for g in summary["gate_curve"][-1][1])  # 6 AdamW steps move the zero-initialised gates
    if summary["best_step"] == 6:
        assert sorted(summary["gate_curve"][-1][1]) == pytest.approx(
            sorted(float(np.tanh(weights[k].item())) for k in gate_keys), abs=1e-6)
    thresholds = json.loads((best / "thresholds.json").read_text())
    assert len(thresholds["thresholds"]) == 29 and all(0.0 < t < 1.0 for t in thresholds["thresholds"])
    saved = load_config(run / "config.yaml")  # the resolved config round-trips
    assert saved.train.max_steps == 6 and saved.text.mode == "meta+classes"
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003", "step_00000006"]
    assert (run / "checkpoints" / "step_00000006" / "custom_checkpoint_0.pkl").is_file()  # the EMA state


def test_the_same_seed_gives_the_same_weights_on_one_machine(uninterrupted, tmp_path):
    """The seed-0 demo reproduces: a second run of the same config (here with train.deterministic, as the demo
    sets it) ends with bitwise the same exported weights and validation curve."""
    config, run, reference = uninterrupted
    again = _train(config, f"output_dir={tmp_path / 'again'}", "train.deterministic=true")
    assert again["val_curve"] == reference["val_curve"]
    assert again["best_step"] == reference["best_step"]
    first, second = load_file(run / "best" / "model.safetensors"), load_file(tmp_path / "again" / "best" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), [k for k in first if not torch.equal(first[k], second[k])][:5]


def test_killed_run_resumed_matches_uninterrupted(uninterrupted, tmp_path):
    config, _, reference = uninterrupted
    out = tmp_path / "killed"
    cmd = script("train.py") + ["--config", str(config), f"output_dir={out}"]
    proc = subprocess.Popen(cmd, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    checkpoint = out / "checkpoints" / "step_00000003"
    while not (checkpoint / "trainer_state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (checkpoint / "trainer_state.json").exists()
    assert read_trainer_state(checkpoint)["progress"]["step"] == 3
    # Whatever the killed process got to after step 3 is discarded: resume from step 3 exactly.
    for later in list_checkpoints(out):
        if later != checkpoint:
            shutil.rmtree(later)
    (out / "summary.json").unlink(missing_ok=True)
    resumed = _train(config, f"output_dir={out}", "--resume", str(checkpoint))
    assert resumed["steps"] == reference["steps"]
    assert resumed["last"]["mean_dice"] == pytest.approx(reference["last"]["mean_dice"], abs=1e-4)
    np.testing.assert_allclose(resumed["val_curve"], reference["val_curve"], atol=1e-4)  # kept across the resume
    assert [step for step, _ in resumed["gate_curve"]] == [step for step, _ in reference["gate_curve"]]
    _, reference_run, _ = uninterrupted
    np.testing.assert_allclose(logged_losses(out)[3:], logged_losses(reference_run)[3:], atol=1e-4)


def test_two_process_ddp_matches_single_process(tiny_config, tmp_path):
    single = _train(tiny_config, f"output_dir={tmp_path / 'single'}", "train.max_steps=3", "train.batch_size=4")
    torchrun = [script("train.py")[0], "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517", script("train.py")[1]]
    ddp = _train(tiny_config, f"output_dir={tmp_path / 'ddp'}", "train.max_steps=3", "train.batch_size=2",
                 launcher=torchrun)
    assert ddp["num_processes"] == 2 and single["num_processes"] == 1
    np.testing.assert_allclose(logged_losses(tmp_path / "ddp"), logged_losses(tmp_path / "single"), atol=1e-3)
    # Validation rows gathered across ranks: every validation image counted exactly once.
    assert ddp["last"]["num_images"] == single["last"]["num_images"]


def test_nan_loss_stops_with_a_clear_message_and_a_saved_state(tiny_config, tmp_path, monkeypatch):
    import torch

    from mmseg_text.training import losses
    from mmseg_text.training import loop as train_module

    real_forward = losses.BCEDiceLoss.forward
    calls = {"n": 0}

    def poisoned(self, logits, targets):
        calls["n"] += 1
        loss = real_forward(self, logits, targets)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(losses.BCEDiceLoss, "forward", poisoned)
    cfg = load_config(tiny_config, [f"output_dir={tmp_path / 'nan'}", "train.checkpoint_every=0"])
    with pytest.raises(train_module.TrainingDiverged, match="loss became nan at step 3") as err:
        train_module.train(cfg)
    saved = list_checkpoints(tmp_path / "nan")
    assert [p.name for p in saved] == ["step_00000002"] and str(saved[0]) in str(err.value)
    assert torch.isfinite(torch.tensor(read_trainer_state(saved[0])["progress"]["best_dice"]))
