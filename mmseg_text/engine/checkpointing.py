"""Training-state checkpoints (``accelerator.save_state``) written atomically, rotated, and found for resume.

A state is written into a hidden temporary folder and renamed into place only when every process
has finished writing, so a run killed mid-save never leaves a half checkpoint that resume would pick.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator

from mmseg_text.io import atomic_write_json

TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / TRAINER_STATE).exists()]
    return [p for _, p in sorted(found)]


def save_training_state(accelerator: Accelerator, output_dir: str | Path, step: int,
                        trainer_state: dict[str, Any], keep: int) -> Path:
    """Save model/optimizer/scheduler/RNG state plus ``trainer_state.json`` as ``checkpoints/step_N``."""
    root = checkpoints_dir(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / TRAINER_STATE, trainer_state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(output_dir: str | Path, resume: Optional[str]) -> Optional[Path]:
    """``latest`` -> newest complete checkpoint of this run; otherwise a checkpoint folder path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint under {checkpoints_dir(output_dir)}")
        return found[-1]
    path = Path(resume)
    if not (path / TRAINER_STATE).exists():
        raise FileNotFoundError(f"--resume {path}: not a training checkpoint (no {TRAINER_STATE})")
    return path


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAINER_STATE).read_text())
