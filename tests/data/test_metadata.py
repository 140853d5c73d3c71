import numpy as np
import openpyxl
import pandas as pd
import pytest

from mmseg_text.data.metadata import MetadataError, load_metadata, normalise_sex, reconcile_ids


def _korean_xlsx(path, rows):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["ID", "나이", "성별", "체중(몸무게)", "키(신장)", None])  # the remarks header is empty
    for row in rows:
        ws.append(row)
    wb.save(path)
    return path


def test_korean_xlsx_with_excel_escapes(tmp_path):
    path = _korean_xlsx(tmp_path / "meta_data.xlsx", [
        [1, 30, " _x0008_여", 55.5, 160, None],
        [2, 41, "남 ", None, 175, "nail polish"],
        [3, None, "\u3000여", 60, "170 cm", None],
    ])
    meta = load_metadata(path)
    assert list(meta.columns) == ["age", "sex", "weight", "height", "remarks"]
    assert meta.index.name == "person_id" and list(meta.index) == [1, 2, 3]
    assert list(meta["sex"]) == ["female", "male", "female"]
    assert meta.loc[1, "age"] == 30 and meta.loc[1, "weight"] == 55.5 and meta.loc[3, "height"] == 170
    assert np.isnan(meta.loc[2, "weight"])  # missing stays missing, never 0
    assert np.isnan(meta.loc[3, "age"])
    assert meta.loc[2, "remarks"] == "nail polish" and meta.loc[1, "remarks"] is None


def test_english_csv_with_letters_and_blanks(tmp_path):
    path = tmp_path / "meta.csv"
    pd.DataFrame({"id": ["ID007", "8", "9"], "Age": [25, 33, 50], "sex": ["F", "m", ""],
                  "weight": [50, "", 80], "height": [155, 180, None]}).to_csv(path, index=False)
    meta = load_metadata(path)
    assert list(meta.index) == [7, 8, 9]
    assert meta.loc[7, "sex"] == "female" and meta.loc[8, "sex"] == "male" and meta.loc[9, "sex"] is None
    assert np.isnan(meta.loc[8, "weight"]) and np.isnan(meta.loc[9, "height"])
    assert meta.loc[9, "weight"] == 80
    assert meta["remarks"].isna().all()


def test_missing_columns_are_named_with_the_file(tmp_path):
    path = tmp_path / "broken.csv"
    pd.DataFrame({"ID": [1], "나이": [30], "성별": ["여"]}).to_csv(path, index=False)
    with pytest.raises(MetadataError, match=r"broken\.csv.*'weight', 'height'"):
        load_metadata(path)


def test_duplicate_ids_are_named(tmp_path):
    path = _korean_xlsx(tmp_path / "dup.xlsx", [[5, 30, "여", 50, 160], [5, 31, "남", 70, 170], [6, 1, "여", 1, 1]])
    with pytest.raises(MetadataError, match=r"dup\.xlsx.*\[5\]"):
        load_metadata(path)


def test_unknown_sex_value_is_an_error_naming_the_id(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({"ID": [1, 2], "age": [1, 2], "sex": ["여", "x?"], "weight": [1, 2], "height": [1, 2]}
                 ).to_csv(path, index=False)
    with pytest.raises(MetadataError, match=r"m\.csv: ID 2: unrecognised sex value 'x\?'"):
        load_metadata(path)


@pytest.mark.parametrize("raw,expected", [(" _x0008_여", "female"), ("_x0008_남", "male"), ("\x08 남", "male"),
                                          ("Female", "female"), (" M ", "male"), ("", None), (None, None)])
def test_normalise_sex(raw, expected):
    assert normalise_sex(raw) == expected


def test_reconcile_ids():
    meta = pd.DataFrame({"age": [1.0, 2.0, 3.0]}, index=pd.Index([1, 2, 3], name="person_id"))
    report = reconcile_ids(meta, [2, 3, 4, 4])
    assert report.images_without_metadata == [4]
    assert report.metadata_without_images == [1]
    assert not report.ok
    assert reconcile_ids(meta, [1, 2]).ok
