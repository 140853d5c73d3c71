"""Read the per-person metadata table (meta_data.xlsx or .csv) into a tidy DataFrame.

The real sheet has Korean headers (ID, 나이, 성별, 체중(몸무게), 키(신장), an unnamed remarks column)
and sex values such as ``' _x0008_여'`` (stray spaces and an Excel escape of a control character).
Output: indexed by ``person_id`` (int), columns ``age, sex, weight, height, remarks``; numbers are
float (NaN when missing, never 0), sex is ``'female' | 'male' | None``, remarks ``str | None``.
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
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")


class MetadataError(ValueError):
    """The metadata table is malformed; the message names the file and the columns/rows/IDs."""


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


def _to_number(value: object) -> float:
    text = clean_text(value)
    if text is None:
        return np.nan
    match = _NUMBER.search(text)
    return float(match.group().replace(",", ".")) if match else np.nan


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


def load_metadata(path: str | Path) -> pd.DataFrame:
    """Tidy metadata frame indexed by ``person_id``; see the module docstring for the columns."""
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
    frame = pd.DataFrame({col: np.array([_to_number(v) for v in raw[columns[col]]], dtype=np.float64)
                          for col in ("age", "weight", "height")}, index=index)
    # object columns assigned explicitly: pandas would otherwise turn None into NaN (str dtype)
    frame.insert(1, "sex", pd.Series(sexes, index=index, dtype=object))
    remarks = [clean_text(v) for v in raw[columns["remarks"]]] if "remarks" in columns else [None] * len(raw)
    frame["remarks"] = pd.Series(remarks, index=index, dtype=object)
    return frame.sort_index()


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
