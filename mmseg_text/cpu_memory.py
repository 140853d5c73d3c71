"""Keep freed memory inside the process on CPU (glibc ``mallopt``).

PyTorch's CPU allocator returns every large buffer to glibc, which by default unmaps it (mmap) or
trims the heap, so the next step faults the same pages in again. On the 2-core CPU demo that cost
about a third of the wall time in system time (28.4 s -> 20.9 s for 16 steps once memory is kept).
On GPU, PyTorch's caching allocator already does this for device memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
_kept = False  # whether keep_freed_memory is in force


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def keep_freed_memory() -> bool:
    """No heap trimming, no mmap for large blocks; True when glibc accepted both settings."""
    global _kept
    try:
        libc = _libc()
        _kept = bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)) and bool(libc.mallopt(M_MMAP_MAX, 0))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        _kept = False
    return _kept


@contextmanager
def freed_memory_returned() -> Iterator[None]:
    """Inside: glibc's defaults again (large blocks mmap'd and unmapped when freed), after a trim of what the heap
    holds; ``keep_freed_memory`` again on exit. Validation by windows over whole images allocates buffers of sizes a
    training step never does, and a heap that keeps every size grows with each: a 256-crop run validating 1024²
    images reached 18 GB and was killed. Nothing changes where ``keep_freed_memory`` is not in force."""
    if not _kept:
        yield
        return
    libc = _libc()
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.malloc_trim(0)
    try:
        yield
    finally:
        keep_freed_memory()
