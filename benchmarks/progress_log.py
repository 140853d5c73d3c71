"""``log(message)``: a line on stderr with the seconds since the benchmark started (stdout stays the JSON)."""
from __future__ import annotations

import sys
import time

_STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)
