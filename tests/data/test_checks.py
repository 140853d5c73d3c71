import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mmseg_text.catalogue import load_catalogue
from mmseg_text.data.checks import check_dataset
from mmseg_text.data.layout import find_images

CAT = load_catalogue()
REPO = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("check_data_script", REPO / "scripts" / "check_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def root(tiny_root, tmp_path):
    """A private copy of the tiny synthetic set (4 train IDs, 2 test IDs, metadata rows for 8 IDs)."""
    return Path(shutil.copytree(tiny_root, tmp_path / "root"))


def _edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc["annotations"])
    path.write_text(json.dumps(doc))


def _drop_from_metadata(root, person_id):
    meta = pd.read_excel(root / "meta_data.xlsx", dtype=object)
    meta[meta["ID"] != person_id].to_excel(root / "meta_data.xlsx", index=False)


def test_clean_dataset_passes_and_script_exits_0(root, capsys):
    report = check_dataset(root, CAT)
    assert report.ok and report.errors == []
    assert report.counts["train images"] == 8 and report.counts["test images"] == 4
    # the sheet, like the real one, has rows for people without images: warnings only
    assert {i.kind for i in report.warnings} <= {"metadata_without_images"}
    assert _load_script().main([str(root)]) == 0
    assert "OK: no errors" in capsys.readouterr().out


def test_each_problem_is_found_with_its_file(root, capsys):
    train = find_images(root, "train")
    truncated = train[0].image_path
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    unknown, two_points, outside, unparsable = (r.json_path for r in train[1:5])
    _edit_json(unknown, lambda a: a[3].update(label="finger-99"))  # unknown label (and that class missing)
    _edit_json(two_points, lambda a: a[5].update(points=[[1, 1], [4, 4]]))
    _edit_json(outside, lambda a: a[0].update(points=[[1, 1], [300, 1], [1, 5]]))  # x=300 outside 256 px
    unparsable.write_text('{"annotations": [')
    dropped = train[-1].person_id
    _drop_from_metadata(root, dropped)

    report = check_dataset(root, CAT)
    found = {(i.kind, i.path) for i in report.issues}
    assert ("unreadable_image", str(truncated)) in found
    assert ("unknown_label", str(unknown)) in found
    assert ("missing_labels", str(unknown)) in found
    assert ("bad_polygon", str(two_points)) in found
    assert ("polygon_outside", str(outside)) in found
    assert ("bad_json", str(unparsable)) in found
    assert ("missing_metadata", str(train[-1].image_path.parent)) in found
    by_kind = report.by_kind()
    assert "'finger-99'" in by_kind["unknown_label"][0].message
    assert "2 point(s)" in by_kind["bad_polygon"][0].message
    assert f"person ID {dropped} " in by_kind["missing_metadata"][0].message
    assert len(report.errors) == 7 and not report.ok

    assert _load_script().main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "[ERROR] Unreadable or truncated images (1):" in out and str(truncated) in out
    assert "[ERROR] Polygons with fewer than 3 points (or non-numeric points) (1):" in out and str(two_points) in out
    assert "FAILED: 7 error(s)" in out
    assert _load_script().main([str(root), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["num_errors"] == 7
    bad_polygon = [i for i in doc["issues"] if i["kind"] == "bad_polygon"]
    assert bad_polygon == [{"severity": "error", "kind": "bad_polygon", "path": str(two_points),
                            "message": bad_polygon[0]["message"]}]


def test_parallel_decode_finds_the_same(root):
    truncated = find_images(root, "test")[1].image_path
    truncated.write_bytes(truncated.read_bytes()[:-40])
    report = check_dataset(root, CAT, workers=2)
    assert [(i.kind, i.path) for i in report.errors] == [("unreadable_image", str(truncated))]


def test_train_image_without_json_and_orphan_json(root):
    record = find_images(root, "train")[2]
    orphan = record.json_path.with_name("image0000000000000.json")
    record.json_path.rename(orphan)
    report = check_dataset(root, CAT)
    kinds = {(i.kind, i.path, i.severity) for i in report.issues}
    assert ("missing_json", str(record.image_path), "error") in kinds
    assert ("orphan_json", str(orphan), "warning") in kinds


def test_missing_metadata_file_and_missing_root(root, tmp_path):
    (root / "meta_data.xlsx").unlink()
    report = check_dataset(root, CAT)
    assert [(i.kind, i.severity) for i in report.issues] == [("metadata_file", "error")]
    assert _load_script().main([str(tmp_path / "nothing")]) == 1


def test_misnamed_person_folder_is_an_error_not_orphan_jsons(root, caplog):
    import logging

    from mmseg_text.data.layout import scan_images

    record = find_images(root, "train")[0]
    pid = record.person_id
    good = f"ID{pid:03d}"
    bad = f"IDx{pid:02d}"
    dcm = root / "train" / "DCM"
    jsons = root / "train" / "outputs_json"
    (dcm / good).rename(dcm / bad)
    (jsons / good).rename(jsons / bad)

    records, skipped = scan_images(root, "train")
    assert pid not in {r.person_id for r in records} and len(records) == 6
    assert skipped == [(dcm / bad, f"folder name '{bad}' is not a person ID (ID<number>, e.g. ID006): "
                                   "its 2 image(s) are not used")]
    with caplog.at_level(logging.WARNING, logger="mmseg_text.data.layout"):
        assert find_images(root, "train") == records
    assert [r.getMessage() for r in caplog.records] == [f"{dcm / bad}: {skipped[0].reason}"]

    report = check_dataset(root, CAT)
    assert [(i.severity, i.kind, i.path) for i in report.errors] == [
        ("error", "layout", str(dcm / bad)), ("error", "layout", str(jsons / bad))]
    assert report.errors[1].message == (f"folder name '{bad}' is not a person ID (ID<number>, e.g. ID006): "
                                        "its 2 annotation(s) are not used")
    assert not [i for i in report.issues if i.kind == "orphan_json"]


def test_non_image_files_are_counted_and_reported(root, caplog):
    import logging

    record = find_images(root, "train")[0]
    jpg = record.image_path.with_suffix(".jpg")
    jpg.write_bytes(b"\xff\xd8\xff")
    notes = record.image_path.parent.parent / "notes.txt"
    notes.write_text("x")
    (record.image_path.parent / ".DS_Store").write_bytes(b"\0")  # hidden: not data, not listed
    with caplog.at_level(logging.WARNING, logger="mmseg_text.data.layout"):
        assert len(find_images(root, "train")) == 8
    assert sorted(r.getMessage() for r in caplog.records) == sorted([
        f"{jpg}: not a PNG/DCM image (.jpg file): not used",
        f"{notes}: file outside a person folder (expected DCM/IDxxx/)"])
    report = check_dataset(root, CAT)
    assert report.ok and report.counts["train files skipped"] == 2
    assert sorted((i.severity, i.kind, i.path) for i in report.issues if i.kind == "stray_file") == sorted([
        ("warning", "stray_file", str(jpg)), ("warning", "stray_file", str(notes))])
    assert "Files that are not images (not used) (2):" in report.format()


def test_metadata_typos_are_warnings_naming_id_column_and_value(root):
    meta = pd.read_excel(root / "meta_data.xlsx", dtype=object)
    first, second = int(meta["ID"].iloc[0]), int(meta["ID"].iloc[1])
    age_col, height_col = meta.columns[1], meta.columns[4]
    meta[age_col] = meta[age_col].astype(object)
    meta[height_col] = meta[height_col].astype(object)
    meta.loc[0, age_col] = "3O"
    meta.loc[1, height_col] = "1.60m"
    meta.to_excel(root / "meta_data.xlsx", index=False)
    report = check_dataset(root, CAT)
    assert report.ok  # warnings: the values are read as missing, training can go on
    values = [(i.severity, i.path, i.message) for i in report.issues if i.kind == "metadata_value"]
    path = str(root / "meta_data.xlsx")
    assert values == [
        ("warning", path, f"ID {first}, column 'age' ({age_col}): value '3O' is not a clean number "
                          "(a letter O for a zero?); treated as missing"),
        ("warning", path, f"ID {second}, column 'height' ({height_col}): value '1.60m' has the unit 'm', "
                          "expected a number in cm; treated as missing")]
