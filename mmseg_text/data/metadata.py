"""Read the per-person metadata table (meta_data.xlsx or .csv) into a tidy DataFrame.

The real sheet has Korean headers (ID, 나이, 성별, 체중(몸무게), 키(신장), an unnamed remarks column)
and sex values such as ``' _x0008_여'`` (stray spaces and an Excel escape of a control character).
Output: indexed by ``person_id`` (int), columns ``age, sex, weight, height, remarks``; numbers are
float (NaN when missing, never 0), sex is ``'female' | 'male' | None``, remarks ``str | None``.

Numbers are read strictly: a clean number, optionally followed by the column's own unit (``170 cm``,
``55,5 kg``, ``34 세``), inside a plausible range (``*_RANGE`` below). Anything else -- ``3O`` (a
letter O for a zero), ``1.60m`` (another unit), ``340`` years -- is never reinterpreted: the value
becomes missing (the caption says "unknown") and a :class:`MetadataProblem` is recorded in
``frame.attrs["problems"]`` (and logged), which ``check_data`` reports as a warning.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = ("age", "sex", "weight", "height", "remarks")
REQUIRED = ("id", "age", "sex", "weight", "height")
METADATA_FILENAMES = ("meta_data.xlsx", "meta_data.csv")

# Normalised header (lower case, no spaces/escapes) -> canonical column.
_HEADER_ALIASES = {
    "id": "id", "person_id": "id", "personid": "id",
    "나이": "age", "age": "age", "age(years)": "age",
    "성별": "sex", "sex": "sex", "gender": "sex",
    "체중(몸무게)": "weight", "체중": "weight", "몸무게": "weight", "weight": "weight", "weight(kg)": "weight",
    "weight_kg": "weight",
    "키(신장)": "height", "키": "height", "신장": "height", "height": "height", "height(cm)": "height",
    "height_cm": "height",
    "remarks": "remarks", "remark": "remarks", "비고": "remarks", "notes": "remarks", "note": "remarks",
}
_SEX_VALUES = {"여": "female", "여자": "female", "여성": "female", "f": "female", "female": "female",
               "woman": "female", "w": "female",
               "남": "male", "남자": "male", "남성": "male", "m": "male", "male": "male", "man": "male"}
_EXCEL_ESCAPE = re.compile(r"_x[0-9A-Fa-f]{4}_")
# a number (decimal point or comma) and an optional unit word after it; nothing else
_NUMBER_WITH_UNIT = re.compile(r"([-+]?\d+(?:[.,]\d+)?)\s*([^\d\s.,+-]*)")

# Plausible ranges, inclusive. Deliberately wide (the real sheet holds adults of 19-69 years,
# 42-118 kg, 150-187 cm): they only catch impossible values -- a height typed in metres (1.6), a
# weight in grams, an age with a digit too many -- which become missing instead of wrong captions.
AGE_RANGE_YEARS = (0.0, 120.0)
WEIGHT_RANGE_KG = (2.0, 400.0)
HEIGHT_RANGE_CM = (40.0, 250.0)
NUMERIC_COLUMNS = {"age": (AGE_RANGE_YEARS, "years"), "weight": (WEIGHT_RANGE_KG, "kg"),
                   "height": (HEIGHT_RANGE_CM, "cm")}
# the unit words accepted after a number of each column (lower case); other known units are named
_COLUMN_UNITS = {"age": {"", "y", "yr", "yrs", "year", "years", "세", "살"}, "weight": {"", "kg", "kgs"},
                 "height": {"", "cm"}}
_OTHER_UNITS = {"m", "mm", "cm", "km", "in", "inch", "ft", "g", "kg", "lb", "lbs", "st", "months", "month",
                "개월", "y", "yr", "yrs", "years", "year"}


class MetadataError(ValueError):
    """The metadata table is malformed; the message names the file and the columns/rows/IDs."""


@dataclass(frozen=True)
class MetadataProblem:
    """One value that was not read (it became missing): the person, the column, the raw cell and why."""

    person_id: int
    column: str  # canonical: age | weight | height
    raw: object  # the cell as read from the file
    reason: str
    header: str = ""  # the file's own header of the column, e.g. 나이

    def __str__(self) -> str:
        header = f" ({self.header})" if self.header and self.header != self.column else ""
        return f"ID {self.person_id}, column '{self.column}'{header}: value {self.raw!r} {self.reason}; treated as missing"


def clean_text(value: object) -> Optional[str]:
    """Strip Excel ``_xHHHH_`` escapes, control characters and whitespace; empty -> None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = _EXCEL_ESCAPE.sub("", str(value))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = unicodedata.normalize("NFC", text).strip()
    return text or None


def normalise_sex(value: object) -> Optional[str]:
    """'female' | 'male' | None; raises ValueError for a value that is neither."""
    text = clean_text(value)
    if text is None:
        return None
    sex = _SEX_VALUES.get(text.lower())
    if sex is None:
        raise ValueError(f"unrecognised sex value {value!r}")
    return sex


def parse_measurement(value: object, column: str) -> tuple[float, Optional[str]]:
    """(number, None) for a clean, plausible value of ``column`` (age | weight | height);
    (NaN, None) for an empty cell; (NaN, reason) for anything else -- never a guess."""
    (low, high), unit = NUMERIC_COLUMNS[column]
    if isinstance(value, (bool, np.bool_)):
        return np.nan, "is not a number"
    if isinstance(value, (int, float, np.integer, np.floating)) and not (isinstance(value, float) and np.isnan(value)):
        number = float(value)
    else:
        text = clean_text(value)
        if text is None:
            return np.nan, None
        match = _NUMBER_WITH_UNIT.fullmatch(text)
        if match is None or match.group(2).lower() not in _COLUMN_UNITS[column]:
            word = match.group(2).lower() if match else ""
            if word in _OTHER_UNITS:
                return np.nan, f"has the unit {match.group(2)!r}, expected a number in {unit}"
            hint = " (a letter O for a zero?)" if re.fullmatch(r"[\dOo.,]+", text) else ""
            return np.nan, f"is not a clean number{hint}"
        number = float(match.group(1).replace(",", "."))
    if not np.isfinite(number) or not low <= number <= high:
        return np.nan, f"is outside the plausible range {low:g}-{high:g} {unit}"
    return number, None


def _to_person_id(value: object) -> Optional[int]:
    text = clean_text(value)
    if text is None:
        return None
    match = re.fullmatch(r"(?:ID)?0*(\d+)(?:\.0+)?", text, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def _canonical_header(name: object) -> Optional[str]:
    text = clean_text(name)
    if text is None or text.lower().startswith("unnamed"):
        return "remarks"  # pandas names a header-less column "Unnamed: 5"
    return _HEADER_ALIASES.get(re.sub(r"\s+", "", text).lower())


def find_metadata_file(root: str | Path, meta_file: Optional[str | Path] = None) -> Optional[Path]:
    """``meta_file`` if given (must exist), else ROOT/meta_data.xlsx or .csv, else None."""
    if meta_file is not None:
        path = Path(meta_file)
        if not path.is_absolute() and not path.exists():
            path = Path(root) / path
        if not path.exists():
            raise FileNotFoundError(f"metadata file not found: {meta_file}")
        return path
    for name in METADATA_FILENAMES:
        if (Path(root) / name).exists():
            return Path(root) / name
    return None


def load_metadata(path: str | Path, *, log_problems: bool = True) -> pd.DataFrame:
    """Tidy metadata frame indexed by ``person_id``; see the module docstring for the columns.

    Raises :class:`MetadataError` (naming the file) for a table that cannot be used at all. Values
    that are not clean numbers or are implausible become NaN and are listed, as
    :class:`MetadataProblem` (person_id, column, raw, reason, header), in ``frame.attrs["problems"]``
    (an empty list when there are none); each is logged as a warning naming the file, the ID and the
    column unless ``log_problems`` is False (``check_data`` reports them itself).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            raw = pd.read_excel(path, sheet_name=0, dtype=object)
        elif path.suffix.lower() in (".csv", ".tsv"):
            raw = pd.read_csv(path, dtype=object, sep=None if path.suffix.lower() == ".csv" else "\t",
                              engine="python", encoding="utf-8-sig")
        else:
            raise MetadataError(f"{path}: unsupported metadata format (expected .xlsx or .csv)")
    except MetadataError:
        raise
    except FileNotFoundError:
        raise MetadataError(f"{path}: metadata file not found") from None
    except Exception as err:  # openpyxl/pandas parse errors come in many types
        raise MetadataError(f"{path}: cannot read metadata ({type(err).__name__}: {err})") from None

    columns: dict[str, object] = {}
    for col in raw.columns:
        canonical = _canonical_header(col)
        if canonical is None:
            logger.warning("%s: ignoring unknown metadata column %r", path, col)
            continue
        if canonical in columns and canonical != "remarks":
            raise MetadataError(f"{path}: columns {columns[canonical]!r} and {col!r} both mean {canonical!r}")
        columns.setdefault(canonical, col)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise MetadataError(f"{path}: missing required column(s) {missing}; found {[str(c) for c in raw.columns]}")

    raw = raw.dropna(how="all")
    ids = pd.Series([_to_person_id(v) for v in raw[columns["id"]]], dtype=object)
    bad = [n for n in range(len(raw)) if ids.iloc[n] is None]
    if bad:  # spreadsheet rows: header is row 1, the first data row is row 2
        rows = [f"row {raw.index[n] + 2}: {raw[columns['id']].iloc[n]!r}" for n in bad[:5]]
        raise MetadataError(f"{path}: missing or unreadable person ID in {rows}")
    duplicated = sorted(set(ids[ids.duplicated()].astype(int)))
    if duplicated:
        raise MetadataError(f"{path}: duplicate person IDs {duplicated}")

    sexes = []
    for n, value in enumerate(raw[columns["sex"]]):
        try:
            sexes.append(normalise_sex(value))
        except ValueError as err:
            raise MetadataError(f"{path}: ID {int(ids.iloc[n])}: {err}") from None
    index = pd.Index(ids.astype(int).to_numpy(), name="person_id")
    problems: list[MetadataProblem] = []
    numbers: dict[str, list[float]] = {}
    for col in ("age", "weight", "height"):
        numbers[col] = []
        for n, value in enumerate(raw[columns[col]]):
            number, reason = parse_measurement(value, col)
            numbers[col].append(number)
            if reason is not None:
                problems.append(MetadataProblem(int(ids.iloc[n]), col, value, reason, str(columns[col])))
    frame = pd.DataFrame({col: np.array(values, dtype=np.float64) for col, values in numbers.items()}, index=index)
    # object columns assigned explicitly: pandas would otherwise turn None into NaN (str dtype)
    frame.insert(1, "sex", pd.Series(sexes, index=index, dtype=object))
    remarks = [clean_text(v) for v in raw[columns["remarks"]]] if "remarks" in columns else [None] * len(raw)
    frame["remarks"] = pd.Series(remarks, index=index, dtype=object)
    frame = frame.sort_index()
    problems.sort(key=lambda p: (p.person_id, COLUMNS.index(p.column)))
    frame.attrs["problems"] = problems
    for problem in problems if log_problems else ():
        logger.warning("%s: %s", path, problem)
    return frame


def person_meta(meta: Optional[pd.DataFrame], person_id: int) -> dict[str, object]:
    """``{age, sex, weight, height}`` of one person as plain Python values (None when missing)."""
    out: dict[str, object] = {"age": None, "sex": None, "weight": None, "height": None}
    if meta is None or person_id not in meta.index:
        return out
    row = meta.loc[person_id]
    for key in ("age", "weight", "height"):
        value = row[key]
        out[key] = None if pd.isna(value) else float(value)
    sex = row["sex"]
    out["sex"] = None if sex is None or (not isinstance(sex, str) and pd.isna(sex)) else str(sex)
    return out


@dataclass
class IdReconciliation:
    """Person IDs present on one side only."""

    images_without_metadata: list[int] = field(default_factory=list)  # an error: captions/splits need them
    metadata_without_images: list[int] = field(default_factory=list)  # a warning: unused rows

    @property
    def ok(self) -> bool:
        return not self.images_without_metadata

    def summary(self) -> str:
        return (f"{len(self.images_without_metadata)} ID(s) with images but no metadata "
                f"{self.images_without_metadata[:10]}; {len(self.metadata_without_images)} metadata ID(s) "
                f"without images {self.metadata_without_images[:10]}")


def reconcile_ids(meta: pd.DataFrame, person_ids: Iterable[int]) -> IdReconciliation:
    image_ids = {int(i) for i in person_ids}
    meta_ids = {int(i) for i in meta.index}
    return IdReconciliation(sorted(image_ids - meta_ids), sorted(meta_ids - image_ids))
