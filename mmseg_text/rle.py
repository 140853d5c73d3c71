"""Run-length encoding of masks and the submission CSV (``image_name,class,rle``).

RLE (REFERENCE.md): the mask flattened in row-major (C) order, runs written as
``"start length start length ..."`` with 1-indexed starts; an empty mask is the empty string.
Encoding and decoding are vectorised (``np.diff`` / ``np.cumsum``), never a Python loop over pixels.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from mmseg_text.io import atomic_path

SUBMISSION_COLUMNS = ("image_name", "class", "rle")


class RLEError(ValueError):
    """A run-length string is malformed; the message says which run and why."""


class SubmissionError(ValueError):
    """A submission CSV is malformed; the message names the file and the row."""


def rle_encode(mask: np.ndarray) -> str:
    """``"start length ..."`` of a 2-D mask (bool, or integers holding only 0/1)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    if mask.dtype != bool:
        # Probabilities or label maps passed by mistake would otherwise encode as an all-true mask.
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"rle_encode expects a bool or 0/1 mask, got {mask.dtype} values outside {{0, 1}}")
        mask = mask.astype(bool)
    flat = np.concatenate(([False], mask.ravel(order="C"), [False]))
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # 1-indexed run starts and (end + 1)s, alternating
    if edges.size == 0:
        return ""
    edges[1::2] -= edges[0::2]
    return " ".join(map(str, edges.tolist()))


def parse_rle(rle: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, lengths)`` int64 with 1-indexed starts, checked for everything but the image size.

    Raises RLEError for an odd count, non-integers, starts < 1, lengths < 1, or runs that are unsorted
    or overlap. ``None`` and whitespace mean an empty mask.
    """
    if rle is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if not isinstance(rle, str):
        raise RLEError(f"RLE must be a string, got {type(rle).__name__}")
    tokens = rle.split()
    if len(tokens) % 2:
        raise RLEError(f"RLE has an odd number of values ({len(tokens)}): expected 'start length' pairs")
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64) if tokens else np.zeros(0, np.int64)
    except ValueError:
        bad = next(t for t in tokens if not _is_int(t))
        raise RLEError(f"RLE value {bad!r} is not an integer") from None
    starts, lengths = values[0::2], values[1::2]
    if starts.size and starts.min() < 1:
        i = int(np.argmax(starts < 1))
        raise RLEError(f"run {i + 1} starts at {starts[i]}: starts are 1-indexed (>= 1)")
    if lengths.size and lengths.min() < 1:
        i = int(np.argmax(lengths < 1))
        raise RLEError(f"run {i + 1} (start {starts[i]}) has length {lengths[i]}: lengths must be >= 1")
    if starts.size > 1:
        ends = starts + lengths  # one past the last pixel of each run, 1-indexed
        clash = starts[1:] < ends[:-1]
        if clash.any():
            i = int(np.argmax(clash))
            raise RLEError(f"run {i + 2} (start {starts[i + 1]}) begins before run {i + 1} ends "
                           f"(pixel {ends[i] - 1}): runs must be sorted and must not overlap")
    return starts, lengths


def rle_decode(rle: Optional[str], shape: Sequence[int]) -> np.ndarray:
    """Bool mask of ``shape`` (H, W) from an RLE string; RLEError for a malformed or oversized RLE."""
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape))
    starts, lengths = parse_rle(rle)
    if starts.size == 0:
        return np.zeros(shape, dtype=bool)
    last = int(starts[-1] + lengths[-1] - 1)  # runs are sorted, so the last one ends furthest
    if last > size:
        raise RLEError(f"run {starts.size} (start {starts[-1]}, length {lengths[-1]}) ends at pixel {last}, "
                       f"beyond the {'x'.join(map(str, shape))} image ({size} pixels)")
    # Alternating gap/run lengths (gaps may be 0: a run at pixel 1, adjacent runs), expanded by np.repeat.
    edges = np.empty(2 * starts.size + 2, dtype=np.int64)
    edges[0], edges[-1] = 0, size
    edges[1:-1:2], edges[2:-1:2] = starts - 1, starts - 1 + lengths
    values = np.zeros(2 * starts.size + 1, dtype=bool)
    values[1::2] = True
    return np.repeat(values, np.diff(edges)).reshape(shape)


def write_submission(path: str | Path, rows: Iterable[Sequence[str]]) -> int:
    """Write ``(image_name, class, rle)`` rows to a CSV atomically; returns the number of rows."""
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(SUBMISSION_COLUMNS)
            for count, row in enumerate(rows, start=1):
                if len(row) != 3:
                    raise SubmissionError(f"{path}: row {count} has {len(row)} fields, expected (image_name, class, rle)")
                image_name, class_name, rle = row
                if not isinstance(rle, str):
                    raise SubmissionError(f"{path}: row {count} rle is a {type(rle).__name__}, expected a string")
                writer.writerow((image_name, class_name, rle))
    return count


def read_submission(path: str | Path, *, check_rle: bool = True) -> pd.DataFrame:
    """The CSV as a DataFrame with columns ``image_name, class, rle`` (strings; empty rle is "").

    Row ``i`` of the frame (0-based index) is data row ``i + 1``, line ``i + 2`` of the file; errors use
    that numbering. Raises SubmissionError for a missing file, missing columns, empty names or classes,
    duplicate (image_name, class) pairs and, with ``check_rle``, RLE strings that cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"submission not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise SubmissionError(f"{path}: empty file (expected the header {','.join(SUBMISSION_COLUMNS)})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{path}: not a readable CSV ({str(err).strip()})") from None
    missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    frame = frame.loc[:, list(SUBMISSION_COLUMNS)].reset_index(drop=True)
    for column in ("image_name", "class"):
        blank = frame[column].str.strip() == ""
        if blank.any():
            i = int(np.argmax(blank.to_numpy()))
            raise SubmissionError(f"{path}: {row_label(i)} has an empty {column}")
    duplicated = frame.duplicated(subset=["image_name", "class"], keep="first")
    if duplicated.any():
        i = int(np.argmax(duplicated.to_numpy()))
        name, cls = frame.at[i, "image_name"], frame.at[i, "class"]
        first = int(np.flatnonzero(((frame["image_name"] == name) & (frame["class"] == cls)).to_numpy())[0])
        raise SubmissionError(f"{path}: {row_label(i)} repeats image {name!r} class {cls!r} of {row_label(first)}")
    if check_rle:
        for i, rle in enumerate(frame["rle"].tolist()):
            try:
                parse_rle(rle)
            except RLEError as err:
                raise SubmissionError(f"{path}: {row_label(i)} ({frame.at[i, 'image_name']}, "
                                      f"{frame.at[i, 'class']}): malformed RLE: {err}") from None
    return frame


def row_label(index: int) -> str:
    """How errors name the frame's 0-based row ``index``: data row number and file line number."""
    return f"row {index + 1} (line {index + 2})"


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True
