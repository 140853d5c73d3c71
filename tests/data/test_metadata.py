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


def test_typos_and_implausible_values_become_missing_and_are_listed(tmp_path, caplog):
    import logging

    from mmseg_text.data.metadata import MetadataProblem, person_meta

    path = _korean_xlsx(tmp_path / "meta_data.xlsx", [
        [1, "3O", " _x0008_여", 58, "1.60m", None],  # letter O for a zero; height in metres
        [2, 340, "남", "72 kg", "175cm", None],  # an age with a digit too many
        [3, "34세", "여", 0.9, 2500, None],  # weight in tonnes?, height in mm
        [4, 34, "남", "7O", "168", None],
        [5, "", "여", "55,5", " 160 ", None],  # blanks stay missing without a problem; decimal comma is fine
    ])
    with caplog.at_level(logging.WARNING, logger="mmseg_text.data.metadata"):
        meta = load_metadata(path)
    assert np.isnan(meta.loc[1, "age"]) and np.isnan(meta.loc[1, "height"]) and meta.loc[1, "weight"] == 58
    assert np.isnan(meta.loc[2, "age"]) and meta.loc[2, "weight"] == 72 and meta.loc[2, "height"] == 175
    assert meta.loc[3, "age"] == 34 and np.isnan(meta.loc[3, "weight"]) and np.isnan(meta.loc[3, "height"])
    assert np.isnan(meta.loc[4, "weight"]) and meta.loc[4, "height"] == 168
    assert np.isnan(meta.loc[5, "age"]) and meta.loc[5, "weight"] == 55.5 and meta.loc[5, "height"] == 160
    assert meta.attrs["problems"] == [
        MetadataProblem(1, "age", "3O", "is not a clean number (a letter O for a zero?)", "나이"),
        MetadataProblem(1, "height", "1.60m", "has the unit 'm', expected a number in cm", "키(신장)"),
        MetadataProblem(2, "age", 340, "is outside the plausible range 0-120 years", "나이"),
        MetadataProblem(3, "weight", 0.9, "is outside the plausible range 2-400 kg", "체중(몸무게)"),
        MetadataProblem(3, "height", 2500, "is outside the plausible range 40-250 cm", "키(신장)"),
        MetadataProblem(4, "weight", "7O", "is not a clean number (a letter O for a zero?)", "체중(몸무게)"),
    ]
    assert [r.getMessage() for r in caplog.records][:2] == [
        f"{path}: ID 1, column 'age' (나이): value '3O' is not a clean number (a letter O for a zero?); treated as missing",
        f"{path}: ID 1, column 'height' (키(신장)): value '1.60m' has the unit 'm', expected a number in cm; "
        "treated as missing"]
    assert len(caplog.records) == 6
    # the caption says "unknown", never "2-year-old" or "2 cm tall"
    assert person_meta(meta, 1) == {"age": None, "sex": "female", "weight": 58.0, "height": None}
    from mmseg_text.catalogue import load_catalogue
    from mmseg_text.text import CaptionBuilder

    caption = CaptionBuilder(None, load_catalogue(), mode="meta").caption_for_image({"side": "left", **person_meta(meta, 1)})
    assert "unknown age" in caption and "height unknown" in caption and "58 kg" in caption
    assert "year-old" not in caption and "2 cm" not in caption and " 3" not in caption


def test_clean_table_has_no_problems_and_logging_can_be_off(tmp_path, caplog):
    path = tmp_path / "m.csv"
    pd.DataFrame({"ID": [1, 2], "age": [19, "69"], "sex": ["여", "남"], "weight": [42, "118.0"],
                  "height": ["150 cm", 187]}).to_csv(path, index=False)
    assert load_metadata(path).attrs["problems"] == []
    pd.DataFrame({"ID": [1], "age": ["3O"], "sex": ["여"], "weight": [42], "height": [150]}).to_csv(path, index=False)
    meta = load_metadata(path, log_problems=False)
    assert [(p.person_id, p.column, p.raw) for p in meta.attrs["problems"]] == [(1, "age", "3O")]
    assert caplog.records == []


@pytest.mark.parametrize("column,raw,expected", [
    ("age", 0, 0.0), ("age", 120, 120.0), ("age", 120.5, None), ("age", "34 years", 34.0), ("age", True, None),
    ("weight", 2, 2.0), ("weight", "400kg", 400.0), ("weight", "130 lbs", None), ("weight", "-5", None),
    ("height", 40, 40.0), ("height", 250.0, 250.0), ("height", 39.9, None), ("height", "5 ft", None),
    ("height", "165~170", None), ("age", float("nan"), "missing"), ("age", "  ", "missing"),
])
def test_parse_measurement_ranges_and_units(column, raw, expected):
    from mmseg_text.data.metadata import parse_measurement

    number, reason = parse_measurement(raw, column)
    if expected == "missing":
        assert np.isnan(number) and reason is None
    elif expected is None:
        assert np.isnan(number) and reason
    else:
        assert number == expected and reason is None
