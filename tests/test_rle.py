"""RLE encode/decode and the submission CSV, checked on exact strings and values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmseg_text.rle import (
    RLEError,
    SubmissionError,
    read_submission,
    rle_decode,
    rle_encode,
    write_submission,
)

# 3x4 mask, row-major pixel numbers 1..12:
#   . X X .      pixels 2, 3
#   . . . X      pixel 8
#   X X . .      pixels 9, 10  -> one run 8..10
KNOWN_MASK = np.array([[0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=bool)
KNOWN_RLE = "2 2 8 3"


def test_known_tiny_example():
    assert rle_encode(KNOWN_MASK) == KNOWN_RLE
    np.testing.assert_array_equal(rle_decode(KNOWN_RLE, (3, 4)), KNOWN_MASK)
    assert rle_encode(KNOWN_MASK.astype(np.uint8)) == KNOWN_RLE


def test_empty_and_full_masks():
    assert rle_encode(np.zeros((3, 4), bool)) == ""
    assert rle_encode(np.ones((3, 4), bool)) == "1 12"
    assert not rle_decode("", (3, 4)).any()
    assert not rle_decode(None, (3, 4)).any()
    assert rle_decode("1 12", (3, 4)).all()


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (32, 48), (64, 64)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_round_trip_on_random_masks(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = rng.random(shape) < density
    rle = rle_encode(mask)
    decoded = rle_decode(rle, shape)
    assert decoded.dtype == bool and decoded.shape == shape
    np.testing.assert_array_equal(decoded, mask)
    values = [int(v) for v in rle.split()]
    assert sum(values[1::2]) == mask.sum()


def test_round_trip_at_full_resolution():
    yy, xx = np.mgrid[:2048, :2048]
    mask = (yy - 900) ** 2 / 400**2 + (xx - 1100) ** 2 / 150**2 < 1  # a bone-sized ellipse
    rle = rle_encode(mask)
    assert len(rle.split()) == 2 * 799                                # one run per covered row
    np.testing.assert_array_equal(rle_decode(rle, (2048, 2048)), mask)


def test_adjacent_runs_are_accepted():
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (1, 6)), [[1, 1, 1, 1, 0, 0]])


def test_encode_rejects_non_binary_input():
    with pytest.raises(ValueError, match="bool or 0/1"):
        rle_encode(np.full((2, 2), 0.7))
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((1, 2, 2), bool))


@pytest.mark.parametrize("rle, message", [
    ("1 2 5", "odd number of values"),
    ("1 a", "'a' is not an integer"),
    ("1.5 2", "'1.5' is not an integer"),
    ("0 2", "1-indexed"),
    ("3 0", "length 0"),
    ("10 5", "ends at pixel 14, beyond the 3x4 image"),
    ("1 5 3 2", "run 2 .*begins before run 1 ends"),
    ("8 2 1 2", "sorted"),
])
def test_decode_errors(rle, message):
    with pytest.raises(RLEError, match=message):
        rle_decode(rle, (3, 4))


def test_submission_round_trip(tmp_path):
    path = tmp_path / "out" / "submission.csv"
    rows = [("image1.png", "finger-1", KNOWN_RLE), ("image1.png", "finger-2", ""), ("image2.png", "Radius", "1 12")]
    assert write_submission(path, iter(rows)) == 3
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "image_name,class,rle"
    assert text.splitlines()[2] == "image1.png,finger-2,"
    assert sorted(p.name for p in path.parent.iterdir()) == ["submission.csv"]  # no temp file left
    frame = read_submission(path)
    assert list(frame.columns) == ["image_name", "class", "rle"]
    assert [tuple(r) for r in frame.itertuples(index=False)] == rows
    assert frame.at[1, "rle"] == ""


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "submission.csv"
    write_submission(path, [("a.png", "Ulna", "")])
    with pytest.raises(SubmissionError, match="row 2 has 2 fields"):
        write_submission(path, [("a.png", "Ulna", "1 1"), ("b.png", "Ulna")])
    assert read_submission(path).at[0, "rle"] == ""
    assert len(list(tmp_path.iterdir())) == 1


def _write(tmp_path, text):
    path = tmp_path / "sub.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_submission_errors(tmp_path):
    with pytest.raises(SubmissionError, match="not found"):
        read_submission(tmp_path / "nope.csv")
    with pytest.raises(SubmissionError, match=r"missing column\(s\) \['rle'\]"):
        read_submission(_write(tmp_path, "image_name,class\na.png,Ulna\n"))
    with pytest.raises(SubmissionError, match=r"row 2 \(line 3\).*malformed RLE.*odd number"):
        read_submission(_write(tmp_path, "image_name,class,rle\na.png,Ulna,1 2\na.png,Radius,1 2 3\n"))
    with pytest.raises(SubmissionError, match=r"row 3 \(line 4\) repeats image 'a.png' class 'Ulna' of row 1"):
        read_submission(_write(tmp_path, "image_name,class,rle\na.png,Ulna,\nb.png,Ulna,\na.png,Ulna,1 1\n"))
    with pytest.raises(SubmissionError, match=r"row 1 \(line 2\) has an empty class"):
        read_submission(_write(tmp_path, "image_name,class,rle\na.png,,\n"))
    with pytest.raises(SubmissionError, match="empty file"):
        read_submission(_write(tmp_path, ""))
    frame = read_submission(_write(tmp_path, "image_name,class,rle\na.png,Ulna,\n"))
    assert isinstance(frame, pd.DataFrame) and frame.at[0, "rle"] == ""
