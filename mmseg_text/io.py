"""Atomic file writes: a crash mid-write never leaves a half-written CSV, JSON or checkpoint.

``write_failure`` turns the many shapes of "the disk is full / read-only / not ours" (OSError with an
errno, torch's ``inline_container`` RuntimeError, safetensors' ``os error 28`` text) into one
:class:`DiskWriteError` that says which of the three it is and names the target.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and Paths appear in summaries; make them plain JSON.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save_figure(fig: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG through a temporary file, then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


# errno -> what the user is told (the words are part of the contract: tests and users grep them)
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
# Text of write failures that do not come as an OSError: torch.save's C++ writer ("[enforce fail at
# inline_container.cc:...] . unexpected pos ..." / "PytorchStreamWriter failed writing file ...") and
# safetensors / Rust I/O errors ("... (os error 28)").
_WRITE_FAILURE_TEXT = re.compile(r"inline_container|PytorchStreamWriter|file write failed|unexpected pos|"
                                 r"os error \d+|No space left|Read-only file system|Permission denied|quota", re.I)
_TEXT_ERRNOS = ((re.compile(r"No space left|os error 28", re.I), errno.ENOSPC),
                (re.compile(r"quota|os error 122", re.I), errno.EDQUOT),
                (re.compile(r"Read-only file system|os error 30", re.I), errno.EROFS),
                (re.compile(r"Permission denied|os error 13", re.I), errno.EACCES),
                (re.compile(r"Operation not permitted|os error 1\b", re.I), errno.EPERM))
# Below this much free space after a failed write (and the clean-up of its partial files), a write
# failure without an errno is put down to a full disk.
LOW_SPACE_BYTES = 256 * 2**20


class DiskWriteError(OSError):
    """Saving failed because the disk is full, read-only or not writable; ``str()`` names the target.

    ``errno`` is ENOSPC / EDQUOT / EROFS / EACCES / EPERM, or EIO when the cause could not be told.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def diagnose_write_errno(path: str | Path) -> int:
    """Why writing under ``path`` fails, from the file system: ENOSPC, EROFS, EACCES, or EIO (unknown)."""
    where = _existing_ancestor(Path(path))
    try:
        if os.statvfs(where).f_flag & os.ST_RDONLY:
            return errno.EROFS
        if shutil.disk_usage(where).free < LOW_SPACE_BYTES:
            return errno.ENOSPC
    except OSError:
        pass
    directory = where if where.is_dir() else where.parent
    if not os.access(directory, os.W_OK):
        return errno.EACCES
    return errno.EIO


def write_failure(err: BaseException, target: str | Path, what: str = "files") -> "DiskWriteError | None":
    """A :class:`DiskWriteError` for ``err`` when it is a write failure of that kind, else None.

    Call it after removing the partial files (the free space is measured then). ``what`` says what
    was being saved ("checkpoint", "training state") for the message.
    """
    if isinstance(err, DiskWriteError):
        return err
    code: int | None = None
    if isinstance(err, OSError):
        code = err.errno if err.errno in WRITE_ERRNOS else None
    elif isinstance(err, RuntimeError) or type(err).__name__ == "SafetensorError":
        text = str(err)
        if _WRITE_FAILURE_TEXT.search(text):
            code = next((c for pattern, c in _TEXT_ERRNOS if pattern.search(text)), None)
            code = code or diagnose_write_errno(target)
    if code is None:
        return None
    reason = WRITE_ERRNOS.get(code, "the write failed")
    hint = {errno.ENOSPC: "free some space or write to another disk",
            errno.EDQUOT: "free some space or write to another disk",
            errno.EROFS: "write to a writable location",
            errno.EACCES: "write to a folder you may write to",
            errno.EPERM: "write to a folder you may write to"}.get(code, "check free space and permissions")
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    message = f"cannot save {what} to {target}: {reason} ({hint}; {type(err).__name__}: {detail[:200]})"
    return DiskWriteError(code, message)
