"""Writing the dataset in the real on-disk layout, quirks included.

train/test ``DCM`` PNGs and ``outputs_json`` annotations per person folder, ``meta_data.xlsx`` with the
Korean headers and noisy sex values, and ``synthetic_truth.csv`` with what a reader must recover (side,
wrist angle). The real files' oddities are reproduced on purpose so the readers are tested against them.
"""
from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.data.layout import person_dir_name
from mmseg_text.data.synthetic.anatomy import anatomy_bone_names
from mmseg_text.data.synthetic.plan import DatasetPlan, ImageSpec, Person, plan_dataset
from mmseg_text.data.synthetic.render import check_degrade, check_fade, render_image
from mmseg_text.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

TRUTH_FILE = "synthetic_truth.csv"
CARD_FILE = "synthetic_card.json"  # the generator's arguments (ids, size, seed, degrade, fade)
META_FILE = "meta_data.xlsx"
META_HEADERS = ("ID", "나이", "성별", "체중(몸무게)", "키(신장)", None)  # last column: unnamed remarks
WRONG_JSON_SIZE = {"height": 3060, "width": 3060}  # the real files state this size; it is wrong on purpose
_KST = timezone(timedelta(hours=9))


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def annotation_document(spec: ImageSpec, polygons: dict[str, np.ndarray], class_names) -> dict:
    """The real JSON schema, quirks included: ``.jpg`` file name and a wrong ``metadata`` size."""
    rng = np.random.default_rng([*spec.seed, 7])
    day = datetime.fromtimestamp(spec.timestamp / 1000, tz=_KST).strftime("%Y%m%d")
    annotations = [{"id": f"{int(rng.integers(1, 100))}-{_uuid(rng)}", "type": "poly_seg", "attributes": {},
                    "points": polygons[name].tolist(), "label": name} for name in class_names]
    return {
        "annotations": annotations,
        "attributes": {},
        "file_id": _uuid(rng),
        "filename": f"{spec.image_id}.jpg",
        "parent_path": f"/X-ray_UNIST/{day}/{person_dir_name(spec.person.person_id)}",
        "last_modifier_id": _uuid(rng),
        "metadata": dict(WRONG_JSON_SIZE),
        "last_workers": {},
    }


def image_paths(root: Path, spec: ImageSpec) -> tuple[Path, Path]:
    person = person_dir_name(spec.person.person_id)
    return (root / spec.split / "DCM" / person / f"{spec.image_id}.png",
            root / spec.split / "outputs_json" / person / f"{spec.image_id}.json")


def _write_image(task: tuple[Path, ImageSpec, int, tuple[str, ...], float, str]) -> str:
    root, spec, size, class_names, degrade, fade = task
    rendered = render_image(spec, size, degrade, fade)
    png_path, json_path = image_paths(root, spec)
    ok, encoded = cv2.imencode(".png", rendered.image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {png_path}")
    atomic_write_bytes(png_path, encoded.tobytes())
    # One line, as the real files: an indented JSON of dense polygons is several times larger.
    document = annotation_document(spec, rendered.polygons, class_names)
    atomic_write_text(json_path, json.dumps(document, ensure_ascii=False))
    return spec.image_id


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; nested OpenCV threads only oversubscribe the cores


# =============================================================================== the whole dataset
def check_catalogue(catalogue: ClassCatalogue) -> None:
    """The generator draws a fixed anatomy; refuse a catalogue whose classes it cannot draw."""
    drawn, wanted = set(anatomy_bone_names()), set(catalogue.names)
    if drawn != wanted:
        raise ValueError(f"synthetic generator draws {sorted(drawn - wanted)} not in {catalogue.source}, "
                         f"and cannot draw {sorted(wanted - drawn)}")


def generate_dataset(out: str | Path, *, ids: int, size: int = 2048, seed: int = 0, workers: int = 1,
                     progress: bool = True, skip_existing: bool = False,
                     catalogue: Optional[ClassCatalogue] = None, degrade: float = 0.0, fade: str = "bones") -> dict:
    """Write a synthetic dataset in the real layout under ``out`` and return a short summary.

    ``skip_existing`` keeps images whose PNG and JSON are already there (same seed -> same files).
    The metadata spreadsheet and ``synthetic_truth.csv`` are always rewritten. ``degrade`` in [0, 1]: images
    that say less about the bones (render.py; ``fade="hand"`` hides the whole hand, not only its bones), same
    people, masks and metadata; ``synthetic_card.json`` records
    the arguments, and ``skip_existing`` refuses a folder made with other ones.
    """
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    degrade, fade = check_degrade(degrade), check_fade(fade)
    catalogue = catalogue or load_catalogue()
    check_catalogue(catalogue)
    started = time.perf_counter()
    root = Path(out)
    card = {"ids": ids, "size": size, "seed": seed, "degrade": degrade, "fade": fade}
    _check_card(root, card, skip_existing)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / CARD_FILE, card)  # before drawing: an interrupted run is recorded too
    plan = plan_dataset(ids, seed)
    todo = [spec for spec in plan.images
            if not (skip_existing and all(p.exists() for p in image_paths(root, spec)))]
    tasks = [(root, spec, size, tuple(catalogue.names), degrade, fade) for spec in todo]
    _run_tasks(tasks, workers, progress)
    for split in ("train", "test"):
        (root / split / "DCM").mkdir(parents=True, exist_ok=True)
        (root / split / "outputs_json").mkdir(parents=True, exist_ok=True)
    write_metadata_xlsx(root / META_FILE, plan, seed)
    atomic_write_text(root / TRUTH_FILE, truth_frame(plan).to_csv(index=False))
    return _summary(root, plan, size, seed, degrade, fade, written=len(todo), seconds=time.perf_counter() - started)


def _check_card(root: Path, card: dict, skip_existing: bool) -> None:
    """Kept images must have been drawn with the same arguments. A folder of images from before the card has
    none: its images are level 0, its other arguments unknown."""
    path = root / CARD_FILE
    if not skip_existing or not (path.exists() or any(root.glob("*/DCM/*/*.png"))):
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"degrade": 0.0}
        old.setdefault("fade", "bones")  # cards from before --fade
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); remove it or the folder") from None
    differ = {k: (old[k], v) for k, v in card.items() if k in old and old[k] != v}
    if card["degrade"] == 0 and old.get("degrade") == 0:
        differ.pop("fade", None)  # nothing fades at level 0: the images are the same bytes
    if differ:
        raise ValueError(f"{root}: --skip-existing would keep images made with other arguments "
                         f"({', '.join(f'{k} {a} vs {b}' for k, (a, b) in differ.items())}); use another --out")


def _run_tasks(tasks: list, workers: int, progress: bool) -> None:
    bar = tqdm(total=len(tasks), desc="synthetic", unit="img", disable=not progress or not tasks)
    with bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                _write_image(task)
                bar.update()
            return
        # spawn, not fork: forking a process whose OpenCV/torch thread pools already ran can deadlock.
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_write_image, tasks):
                bar.update()


def truth_frame(plan: DatasetPlan) -> pd.DataFrame:
    """What the generator knows and a reader must recover: side and wrist angle per image."""
    rows = [{"image_id": s.image_id, "person_id": s.person.person_id, "split": s.split, "side": s.side,
             "wrist_angle_deg": s.wrist_angle_deg, "bent_wrist": s.bent_wrist} for s in plan.images]
    return pd.DataFrame(rows, columns=["image_id", "person_id", "split", "side", "wrist_angle_deg", "bent_wrist"])


def _sex_cells(people: tuple[Person, ...], rng: np.random.Generator) -> list[str]:
    """Korean sex values with the real file's noise: stray leading spaces and an Excel-escaped
    backspace before the word. The first two rows always carry one quirk each, so a reader that
    does not normalise them fails even on a tiny set."""
    cells = []
    for row, person in enumerate(people):
        word = "남" if person.sex == "male" else "여"
        quirk = ("escape", "space")[row] if row < 2 else rng.choice(["", "", "", "", "escape", "space"])
        if quirk == "escape":
            word = "_x0008_" + word
        elif quirk == "space":
            word = " " * int(rng.integers(1, 3)) + word
        cells.append(word)
    return cells


def write_metadata_xlsx(path: Path, plan: DatasetPlan, seed: int) -> None:
    """meta_data.xlsx with the Korean headers, one row per ID (plus metadata-only IDs), an unnamed
    remarks column that is empty but for one nail-polish note, and quirky sex values."""
    import openpyxl  # only needed here

    rng = np.random.default_rng([seed, 0, 3])
    people = plan.people + plan.extra_people
    cells = _sex_cells(people, rng)
    remark_row = len(people) // 2
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(META_HEADERS))
    for i, (person, sex) in enumerate(zip(people, cells)):
        remark = "매니큐어 착용 (nail polish)" if i == remark_row else None
        sheet.append([person.person_id, person.age, sex, person.weight, person.height, remark])
    with atomic_path(path) as tmp:
        book.save(tmp)


def _summary(root: Path, plan: DatasetPlan, size: int, seed: int, degrade: float, fade: str, *, written: int,
             seconds: float) -> dict:
    counts = {split: sum(s.split == split for s in plan.images) for split in ("train", "test")}
    bent = {split: sum(s.split == split and s.bent_wrist for s in plan.images) for split in ("train", "test")}
    return {"out": str(root), "size": size, "seed": seed, "degrade": degrade, "fade": fade,
            "ids": len(plan.people),
            "test_ids": len(plan.test_ids), "images": counts, "bent_wrist": bent,
            "written": written, "skipped": len(plan.images) - written, "seconds": round(seconds, 2)}
