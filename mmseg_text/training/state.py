"""Training-state checkpoints (``accelerator.save_state``) written atomically, rotated, and found for resume.

A state is written into a hidden temporary folder and renamed into place only when every process
has finished writing, so a run killed mid-save never leaves a half checkpoint that resume would pick.
A save that fails for lack of space / a read-only or foreign folder removes its temporary folder and
raises :class:`~mmseg_text.io.DiskWriteError` naming the target. ``load_latest_state`` resumes from the
newest checkpoint whose files load, falling back (with a warning naming the damaged file) to older ones;
``clean_stale_temporaries`` removes the temporary folders of saves that were killed.
"""
from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator

from mmseg_text.io import atomic_write_json, write_failure
from mmseg_text.run_layout import BEST_DIR, RunLayout, step_of

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
# Leftovers of killed saves: save_state's temporary folder, and save_model_dir's temporary and replaced
# copies of best/ (``.best.*.tmp``, ``.best.old-*``; see models/build.py).
STALE_PATTERNS = (("checkpoints", ".tmp_step_*"), (".", f".{BEST_DIR}.*.tmp"), (".", f".{BEST_DIR}.old-*"))
# A damaged file makes load_state raise almost anything: torch.load of a truncated zip gives a
# RuntimeError ("failed finding central directory") or OSError EINVAL, pickle errors, safetensors'
# SafetensorError (a bare Exception subclass), JSON errors (ValueError). So every Exception is caught,
# and the checkpoint's files are then probed: without a damaged file the error is re-raised.


class TrainingStateError(RuntimeError):
    """No checkpoint could be resumed from; the message names the damaged file(s)."""


def checkpoints_dir(output_dir: str | Path) -> Path:
    return RunLayout(output_dir).checkpoints


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir()
             if (step := step_of(p.name)) is not None and (p / TRAINER_STATE).exists()]
    return [p for _, p in sorted(found)]


def save_training_state(accelerator: Accelerator, output_dir: str | Path, step: int,
                        trainer_state: dict[str, Any], keep: int) -> Path:
    """Save model/optimizer/scheduler/RNG state plus ``trainer_state.json`` as ``checkpoints/step_N``."""
    layout = RunLayout(output_dir)
    final, tmp = layout.step_dir(step), layout.step_tmp_dir(step)
    try:
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
    except Exception as err:  # OSError, torch's RuntimeError, safetensors' SafetensorError
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(err, final, "training state")
        if failure is None:
            raise
        raise failure from err
    if accelerator.is_main_process:
        rotate_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints (``keep`` <= 0 keeps every one); returns the deleted."""
    old = list_checkpoints(output_dir)[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
        logger.debug("rotated out %s", path)
    return old


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


def _damage_of(path: Path) -> Optional[str]:
    """Why ``path`` (one file of a saved state) cannot be read, or None when it reads."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(path), device="cpu")
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix in (".bin", ".pkl", ".pt", ".pth"):
            # torch.save writes a zip archive with CRCs: checking it reads every byte without unpickling
            if not zipfile.is_zipfile(path):
                return "not a complete torch archive (truncated or overwritten)"
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"checksum error in its entry {bad}"
    except Exception as err:  # noqa: BLE001 - any failure to read means damaged
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
    return None


def find_damaged_file(checkpoint: str | Path, err: Optional[BaseException] = None) -> Optional[tuple[Path, str]]:
    """(file, reason) of the first file of ``checkpoint`` that does not read, else None.

    ``err`` (the error load_state raised) names a missing file when it is a FileNotFoundError.
    """
    checkpoint = Path(checkpoint)
    if isinstance(err, FileNotFoundError) and err.filename:
        return Path(err.filename), "missing"
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return state, "missing"
    for path in [state] + sorted(p for p in checkpoint.iterdir() if p.is_file() and p != state):
        reason = _damage_of(path)
        if reason is not None:
            return path, reason
    return None


def load_latest_state(accelerator: Accelerator, output_dir: str | Path, resume: Optional[str]) -> Optional[Path]:
    """``accelerator.load_state`` of the checkpoint ``resume`` names; returns it (None without ``resume``).

    With ``resume="latest"`` the checkpoints are tried newest first: one whose files are damaged
    (truncated ``optimizer.bin``, corrupt ``model.safetensors`` or ``trainer_state.json``) is skipped
    with a warning naming the file, and the previous complete one is loaded. When none is left, or an
    explicit checkpoint path is damaged, :class:`TrainingStateError` names the damaged file(s). A
    load error without a damaged file (e.g. a model of another shape) is re-raised as it is.
    """
    if not resume:
        return None
    candidates = list(reversed(list_checkpoints(output_dir))) if resume == "latest" else []
    if resume != "latest" or not candidates:
        candidates = [resolve_resume(output_dir, resume)]  # raises the usual "no checkpoint" error
    damaged: list[str] = []
    for n, checkpoint in enumerate(candidates):
        try:
            read_trainer_state(checkpoint)  # a corrupt trainer_state.json is damage too
            accelerator.load_state(str(checkpoint))
        except Exception as err:  # noqa: BLE001 - see the note at the top
            found = find_damaged_file(checkpoint, err)
            if found is None:
                raise
            path, reason = found
            damaged.append(f"{path} ({reason})")
            if n + 1 < len(candidates):
                logger.warning("checkpoint %s is damaged: %s (%s); falling back to the previous checkpoint %s",
                               checkpoint, path, reason, candidates[n + 1])
            continue
        if damaged:
            logger.warning("resumed from %s; newer damaged checkpoint(s) skipped: %s", checkpoint, "; ".join(damaged))
        return checkpoint
    where = f"under {checkpoints_dir(output_dir)}" if resume == "latest" else f"--resume {resume}"
    raise TrainingStateError(f"cannot resume: the checkpoint is damaged and no earlier complete checkpoint is left "
                              f"({where}): {'; '.join(damaged)}. Delete the damaged checkpoint folder(s), or "
                              "start without --resume.")


def clean_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove the leftovers of killed saves (``checkpoints/.tmp_step_*``, ``.best.*.tmp``, ``.best.old-*``).

    A kill between the two renames of an export leaves no ``best/`` but its previous copy in ``.best.old-*``:
    that copy is renamed back to ``best/`` first, so a complete model is never deleted. Only directories
    matching those names are removed, each logged; returns them. Call it on the main process at training
    start, before anything is saved (a save in progress would lose its folder).
    """
    layout = RunLayout(output_dir)
    previous = sorted(layout.root.glob(f".{BEST_DIR}.old-*"), key=lambda p: p.stat().st_mtime) if layout.root.is_dir() else []
    if previous and not layout.best.exists() and previous[-1].is_dir():
        previous[-1].rename(layout.best)
        logger.warning("restored %s from %s, the copy an interrupted export had set aside", layout.best, previous[-1])
    removed = []
    for sub, pattern in STALE_PATTERNS:
        folder = Path(output_dir) / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                logger.warning("removed %s, the leftover of an interrupted save", path)
                removed.append(path)
    return removed
