"""Broken inputs, table-driven: each variant of a broken dataset through ``check_data``, training (2 steps)
and prediction, with the outcome asserted -- a result, or exit 1 with ONE line naming the file.

Every variant breaks a copy of the session's tiny synthetic dataset (``tiny_root``: 4 train IDs, 2 test
IDs, 256 px) and runs the three command-line entry points in-process (``main(argv) -> int``). Training
uses the tiny 64 px config with 2 steps, a fresh output_dir and data cache per case; prediction uses one
model exported from the intact dataset (module fixture) on the variant's ``test/DCM`` folder. The
``accelerate launch`` checks alone run in a subprocess.

Outcomes in the table: ``OK`` (exit 0 and a result), or ``fails(*names)`` (exit 1, exactly one stderr
line ``error: ...`` naming each of ``names``); ``warns`` lists what the warnings must name. Names are
templates filled from what the breaking function returns (``{train_png}`` = the path it broke).
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import yaml

from mmseg_text.cli import check_data as check_cli
from mmseg_text.cli import predict as predict_cli
from mmseg_text.cli import train as train_cli

from tests.runs import REPO, script_env, tiny_config_dict

pytestmark = pytest.mark.slow

NUM_CLASSES = 29
TRAIN_OVERRIDES = ["train.max_steps=2", "train.eval_every=2", "train.checkpoint_every=0", "train.log_with=[]"]


# --------------------------------------------------------------------------- breaking a copy of the dataset

def _pngs(root: Path, split: str) -> list[Path]:
    return sorted((root / split / "DCM").glob("ID*/*.png"))


def _json_of(png: Path) -> Path:
    root = png.parents[3]
    return root / "train" / "outputs_json" / png.parent.name / f"{png.stem}.json"


def _names(root: Path) -> dict[str, str]:
    """The files a breaking function touches: the first train image (and its JSON), the first test image."""
    train_png, test_png = _pngs(root, "train")[0], _pngs(root, "test")[0]
    return {"train_png": str(train_png), "train_json": str(_json_of(train_png)), "test_png": str(test_png),
            "root": str(root)}


def intact(root: Path) -> dict[str, str]:
    return _names(root)


def zero_byte_png(root: Path) -> dict[str, str]:
    names = _names(root)
    for key in ("train_png", "test_png"):
        Path(names[key]).write_bytes(b"")
    return names


def truncated_png(root: Path) -> dict[str, str]:
    """Cut in half: the header (and so the size) still reads, the pixels do not."""
    names = _names(root)
    for key in ("train_png", "test_png"):
        path = Path(names[key])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return names


def image_without_json(root: Path) -> dict[str, str]:
    names = _names(root)
    Path(names["train_json"]).unlink()
    return names


def json_without_image(root: Path) -> dict[str, str]:
    names = _names(root)
    Path(names["train_png"]).unlink()
    return names


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def json_syntax_error(root: Path) -> dict[str, str]:
    names = _names(root)
    path = Path(names["train_json"])
    path.write_text(path.read_text()[:200])
    return names


def json_missing_one_class(root: Path) -> dict[str, str]:
    names = _names(root)
    _edit_json(Path(names["train_json"]), lambda doc: doc["annotations"].pop(5))
    return names


def json_unknown_label(root: Path) -> dict[str, str]:
    names = _names(root)
    _edit_json(Path(names["train_json"]), lambda doc: doc["annotations"][3].update(label="finger-99"))
    return names


def polygon_far_outside(root: Path) -> dict[str, str]:
    """One polygon moved thousands of pixels to the right of the 256 px image."""
    names = _names(root)

    def move(doc: dict) -> None:
        entry = doc["annotations"][7]
        entry["points"] = [[x + 5000, y] for x, y in entry["points"]]

    _edit_json(Path(names["train_json"]), move)
    return names


def image_half_size(root: Path) -> dict[str, str]:
    """The PNG resized to half its size: its polygons no longer fit (test image too: prediction does not care)."""
    names = _names(root)
    for key in ("train_png", "test_png"):
        image = cv2.imread(names[key], cv2.IMREAD_UNCHANGED)
        cv2.imwrite(names[key], cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2)))
    return names


def misnamed_id_folder(root: Path) -> dict[str, str]:
    """``ID006`` renamed ``IDx06`` (images and annotations alike): its images cannot be used."""
    names = _names(root)
    person = _pngs(root, "train")[-1].parent.name  # the last train ID (not the one _names points at)
    bad = "IDx" + person[3:]
    for sub in ("DCM", "outputs_json"):
        (root / "train" / sub / person).rename(root / "train" / sub / bad)
    names["folder"] = str(root / "train" / "DCM" / bad)
    names["json_folder"] = str(root / "train" / "outputs_json" / bad)
    return names


def stray_jpg(root: Path) -> dict[str, str]:
    """A .jpg copy next to a .png, in the train and the test split (PNG/DICOM only are read)."""
    names = _names(root)
    for key, split in (("train_jpg", "train_png"), ("test_jpg", "test_png")):
        png = Path(names[split])
        jpg = png.with_name(png.stem + "_copy.jpg")
        cv2.imwrite(str(jpg), cv2.imread(str(png)))
        names[key] = str(jpg)
    return names


def _meta_typos(root: Path) -> None:
    """Age '3O' (a letter O) for the first metadata row, height '1.60m' for the second, in the xlsx itself."""
    from openpyxl import load_workbook

    book = load_workbook(root / "meta_data.xlsx")
    sheet = book.active
    headers = [c.value for c in sheet[1]]
    assert headers[:5] == ["ID", "나이", "성별", "체중(몸무게)", "키(신장)"], headers
    assert sheet.cell(2, 1).value == 1 and sheet.cell(3, 1).value == 2
    sheet.cell(2, 2).value = "3O"
    sheet.cell(3, 5).value = "1.60m"
    book.save(root / "meta_data.xlsx")


def meta_typos_xlsx(root: Path) -> dict[str, str]:
    _meta_typos(root)
    return _names(root)


def meta_typos_csv(root: Path) -> dict[str, str]:
    import pandas as pd

    _meta_typos(root)
    frame = pd.read_excel(root / "meta_data.xlsx", dtype=object)
    (root / "meta_data.xlsx").unlink()
    frame.to_csv(root / "meta_data.csv", index=False)
    return _names(root)


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Outcome:
    error: tuple[str, ...] | None = None  # None: success; else what the one error line must name
    warns: tuple[str, ...] = ()  # what the warnings must name (check_data: its warning issues)

    def format(self, names: dict[str, str]) -> Outcome:
        def fill(items: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(s.format(**names) for s in items)

        return Outcome(None if self.error is None else fill(self.error), fill(self.warns))


OK = Outcome()


def fails(*names: str) -> Outcome:
    return Outcome(error=names)


def warns(*names: str) -> Outcome:
    return Outcome(warns=names)


@dataclass(frozen=True)
class Case:
    name: str
    breaks: Callable[[Path], dict[str, str]]
    check: Outcome
    train: Outcome
    predict: Outcome
    skipped: tuple[str, ...] = ()  # with data.skip_bad_samples=true: training runs and skipped_samples.tsv names these


AGE_TYPO = "ID 1, column 'age' (나이): value '3O' is not a clean number"
HEIGHT_TYPO = "ID 2, column 'height' (키(신장)): value '1.60m' has the unit 'm'"

CASES = [
    Case("intact", intact, OK, OK, OK),
    Case("zero_byte_png", zero_byte_png, fails("{train_png}", "{test_png}"), fails("{train_png}"), fails("{test_png}"),
         skipped=("{train_png}",)),
    Case("truncated_png", truncated_png, fails("{train_png}", "{test_png}"), fails("{train_png}"), fails("{test_png}"),
         skipped=("{train_png}",)),
    Case("image_without_json", image_without_json, fails("{train_png}"), fails("{train_png}"), OK,
         skipped=("{train_png}",)),
    Case("json_without_image", json_without_image, warns("{train_json}"), OK, OK),
    Case("json_syntax_error", json_syntax_error, fails("{train_json}"), fails("{train_json}"), OK,
         skipped=("{train_json}",)),
    Case("json_missing_one_class", json_missing_one_class, fails("{train_json}"),
         fails("{train_json}", "missing 1 class"), OK, skipped=("{train_json}",)),
    Case("json_unknown_label", json_unknown_label, fails("{train_json}"), fails("{train_json}", "finger-99"), OK,
         skipped=("{train_json}",)),
    Case("polygon_far_outside", polygon_far_outside, fails("{train_json}"),
         fails("{train_json}", "outside the 256x256"), OK, skipped=("{train_json}",)),
    Case("image_half_size", image_half_size, fails("{train_json}"), fails("{train_json}", "outside the 128x128"), OK,
         skipped=("{train_png}", "{train_json}")),
    Case("misnamed_id_folder", misnamed_id_folder, fails("{folder}", "{json_folder}"), warns("{folder}"), OK),
    Case("stray_jpg", stray_jpg, warns("{train_jpg}", "{test_jpg}"), warns("{train_jpg}"), warns("_copy.jpg")),
    Case("meta_typos_xlsx", meta_typos_xlsx, warns(AGE_TYPO, HEIGHT_TYPO), warns(AGE_TYPO, HEIGHT_TYPO),
         warns(AGE_TYPO, HEIGHT_TYPO)),
    Case("meta_typos_csv", meta_typos_csv, warns(AGE_TYPO, HEIGHT_TYPO), warns(AGE_TYPO, HEIGHT_TYPO),
         warns(AGE_TYPO, HEIGHT_TYPO)),
]


def _params(cases: list[Case], stage: str) -> list:
    return [pytest.param(c, id=c.name) for c in cases]


# --------------------------------------------------------------------------- fixtures and helpers

class Hang(BaseException):
    """Raised by the deadline; a BaseException so that run_main does not turn it into an error line."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts the (single-threaded, in-process) training loop."""
    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s: an endless loop?")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_TQDM = re.compile(r"\| *\d+/\d+ \[")


def error_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines as a terminal shows them (the last carriage-return segment of each), less
    progress bars (tqdm writes them to stderr). A bar with an error glued to it is kept: it is a bug."""
    shown = [line.split("\r")[-1].strip() for line in stderr.split("\n")]
    return [s for s in shown if s and not (_TQDM.search(s) and "error:" not in s)]


def assert_one_error_line(code: int, stderr: str, names: tuple[str, ...]) -> str:
    lines = error_lines(stderr)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    return lines[0]


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= 30]


def assert_warned(messages: list[str], names: tuple[str, ...]) -> None:
    for name in names:
        assert any(name in m for m in messages), f"no warning names {name!r}: {messages}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One text-embedding cache for the module (captions do not depend on the broken files)."""
    return tmp_path_factory.mktemp("bad_inputs_shared")


def write_config(root: Path, work: Path, shared: Path, **data: object) -> Path:
    """The tiny config for ``root``: output and data cache under ``work`` (fresh per case)."""
    doc = tiny_config_dict(root, work / "run", work / "cache")
    doc["text"]["cache_dir"] = str(shared / "text")
    doc["data"].update(data)
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def run_train(config: Path, *overrides: str, seconds: float = 180) -> int:
    with deadline(seconds):
        return train_cli.main(["--config", str(config), *TRAIN_OVERRIDES, *overrides])


@pytest.fixture(scope="module")
def exported(tiny_root, shared) -> Path:
    """A model trained 2 steps on the intact dataset, exported to ``run/best``."""
    work = shared / "model"
    work.mkdir()
    assert run_train(write_config(tiny_root, work, shared)) == 0
    best = work / "run" / "best"
    assert (best / "model.safetensors").is_file()
    return best


def broken_copy(tiny_root: Path, tmp_path: Path, case: Case) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root, case.breaks(root)


def _meta_file(root: Path) -> Path:
    return root / "meta_data.xlsx" if (root / "meta_data.xlsx").exists() else root / "meta_data.csv"


# --------------------------------------------------------------------------- the table-driven suite

@pytest.mark.parametrize("case", _params(CASES, "check"))
def test_check_data(case: Case, tiny_root, tmp_path, capsys):
    root, names = broken_copy(tiny_root, tmp_path, case)
    expected = case.check.format(names)
    code = check_cli.main([str(root), "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert err == ""
    errors = [i for i in report["issues"] if i["severity"] == "error"]
    warnings = [f"{i['path']}: {i['message']}" for i in report["issues"] if i["severity"] == "warning"]
    if expected.error is None:
        assert code == 0 and report["ok"], errors
    else:
        assert code == 1 and not report["ok"]
        for name in expected.error:
            assert any(i["path"] == name for i in errors), f"no error names {name}: {errors}"
    assert_warned(warnings, expected.warns)


@pytest.mark.parametrize("case", _params(CASES, "train"))
def test_train(case: Case, tiny_root, shared, tmp_path, capsys, caplog):
    root, names = broken_copy(tiny_root, tmp_path, case)
    expected = case.train.format(names)
    code = run_train(write_config(root, tmp_path, shared))
    err = capsys.readouterr().err
    if expected.error is None:
        assert code == 0, err[-3000:]
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2
        assert "error" not in err
    else:
        assert_one_error_line(code, err, expected.error)
        assert not (tmp_path / "run" / "summary.json").exists()
    assert_warned(warnings_logged(caplog), expected.warns)


@pytest.mark.parametrize("case", _params([c for c in CASES if c.skipped], "skip"))
def test_train_skipping_bad_samples(case: Case, tiny_root, shared, tmp_path, capsys, caplog):
    root, names = broken_copy(tiny_root, tmp_path, case)
    code = run_train(write_config(root, tmp_path, shared, skip_bad_samples=True))
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    listed = (run / "skipped_samples.tsv").read_text().splitlines()
    assert len(listed) == 1, listed  # one broken sample, listed once
    for name in case.skipped:
        assert name.format(**names) in listed[0]
    assert_warned(warnings_logged(caplog), (case.skipped[-1].format(**names),))


@pytest.mark.parametrize("case", _params(CASES, "predict"))
def test_predict(case: Case, exported, tiny_root, tmp_path, capsys, caplog):
    root, names = broken_copy(tiny_root, tmp_path, case)
    expected = case.predict.format(names)
    images = root / "test" / "DCM"
    out_csv = tmp_path / "submission.csv"
    code = predict_cli.main(["--checkpoint", str(exported), "--images", str(images), "--with-meta",
                             "--meta", str(_meta_file(root)), "--out", str(out_csv)])
    out, err = capsys.readouterr()
    if expected.error is None:
        assert code == 0, err[-3000:]
        report = json.loads(out)
        count = len(list(images.rglob("*.png")))
        assert report["images"] == count and report["rows"] == NUM_CLASSES * count
        assert len(out_csv.read_text().splitlines()) == 1 + NUM_CLASSES * count
    else:
        assert_one_error_line(code, err, expected.error)
        assert not out_csv.exists()
    assert_warned(warnings_logged(caplog), expected.warns)


# --------------------------------------------------------------------------- explicit issue items

def test_batch_larger_than_the_training_split_shrinks_instead_of_hanging(tiny_root, shared, tmp_path, capsys, caplog):
    """6 IDs, 2 folds, batch 8: 4 training images and drop_last would give an epoch without a step."""
    code = run_train(write_config(tiny_root, tmp_path, shared), "train.batch_size=8", seconds=120)
    _, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["epochs_started"] == 2  # one step per epoch of 4 images
    assert summary["config"]["train"]["batch_size"] == 8
    assert_warned(warnings_logged(caplog),
                  ("train.batch_size=8 does not fit 4 training image(s) on 1 process(es): using batch 4",))


def test_empty_training_split_is_an_error_naming_the_sizes(tiny_root, shared, tmp_path, capsys):
    """Every training image unreadable (header intact, pixels cut) and skipped: nothing to train on."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    for png in _pngs(root, "train"):
        png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    code = run_train(write_config(root, tmp_path, shared, skip_bad_samples=True), seconds=120)
    _, err = capsys.readouterr()
    line = assert_one_error_line(code, err, ("the training split has 0 image(s) for 1 process(es)",
                                             f"data.root={root}", "fold 0 of 2"))
    assert "no optimizer step is possible" in line


def test_metadata_typos_are_missing_values_and_captions_say_unknown(tiny_root, tmp_path, catalogue):
    from mmseg_text.config import load_config
    from mmseg_text.data.index import build_index
    from mmseg_text.text import CaptionBuilder

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    meta_typos_xlsx(root)
    cfg = load_config(write_config(root, tmp_path, tmp_path))
    index = build_index(cfg.data, catalogue, progress=False)
    builder = CaptionBuilder(cfg.text.templates, catalogue, mode="meta")
    by_person = {r.person_id: f for r, f in zip(index.records, index.facts)}
    one, two = by_person[1].meta, by_person[2].meta
    assert one["age"] is None and one["height"] == 177.0
    assert two["height"] is None and two["age"] == 22.0
    assert "a man of unknown age" in builder.caption_for_image({"side": "left", "meta": one})
    assert "height unknown" in builder.caption_for_image({"side": "left", "meta": two})


@pytest.mark.parametrize("make", ["directory", "yaml_syntax_error"])
def test_bad_config_file_is_one_line_naming_it(make, tmp_path, capsys):
    if make == "directory":
        config = tmp_path / "configs"
        config.mkdir()
        expected = (f"--config {config} is a directory",)
    else:
        config = tmp_path / "broken.yaml"
        config.write_text("data:\n  root: data/synthetic\n  image_size: [64\ntrain:\n  lr: 1e-3\n")
        expected = (f"{config}: invalid YAML at line",)
    code = train_cli.main(["--config", str(config)])
    _, err = capsys.readouterr()
    assert_one_error_line(code, err, expected)


def test_truncated_weights_in_predict_checkpoint_is_one_line_naming_the_file(exported, tiny_root, tmp_path, capsys):
    checkpoint = tmp_path / "best"
    shutil.copytree(exported, checkpoint)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out_csv = tmp_path / "submission.csv"
    code = predict_cli.main(["--checkpoint", str(checkpoint), "--images", str(tiny_root / "test" / "DCM"),
                             "--out", str(out_csv)])
    _, err = capsys.readouterr()
    line = assert_one_error_line(code, err, (str(weights), "the checkpoint is damaged"))
    assert line.startswith(f"error: {weights}: ")
    assert not out_csv.exists()


# accelerate's own notice for launch flags left at their defaults (printed even with --quiet)
_ACCELERATE_NOTICE = re.compile(r"^(The following values were not passed to `accelerate launch`.*|`--\w+` was set to "
                                r"a value of .*|To avoid this warning pass in values for each of the problematic .*)$")
_LOG_LINE = re.compile(r"^(INFO|WARNING) [\w.]+: ")


LAUNCHED = [c for c in CASES if c.name in ("zero_byte_png", "image_without_json")]


@pytest.mark.parametrize("case", _params(LAUNCHED, "launch"))
def test_accelerate_launch_prints_one_error_line_and_no_traceback(case: Case, tiny_root, shared, tmp_path):
    root, names = broken_copy(tiny_root, tmp_path, case)
    config = write_config(root, tmp_path, shared)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--quiet", "--cpu", "--num_processes", "1", str(REPO / "scripts" / "train.py"),
           "--config", str(config), *TRAIN_OVERRIDES]
    proc = subprocess.run(cmd, check=False, env=script_env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = error_lines(proc.stderr)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines  # once: not repeated by the launcher
    assert lines[-1] == errors[0]
    assert names["train_png"] in errors[0]
    others = [line for line in lines[:-1] if not (_ACCELERATE_NOTICE.match(line) or _LOG_LINE.match(line))]
    assert others == [], others  # nothing but accelerate's notice and log lines before the error
    assert not (tmp_path / "run" / "summary.json").exists()
