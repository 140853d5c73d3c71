"""Score any submission CSV against ground-truth polygons: per-class, grouped and mean Dice.

Each image is scored at its original resolution, read from its PNG header: the ground-truth polygons
are rasterised at that size and every CSV row is decoded at that size. The command line is
``mmseg-evaluate`` (``mmseg_text/cli/evaluate.py``); input problems (images missing on either side,
malformed RLE rows, unknown classes, unreadable files) raise errors naming the culprit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.data.annotations import load_annotation
from mmseg_text.data.images import read_image_size
from mmseg_text.data.layout import IMAGE_SUFFIXES
from mmseg_text.data.masks import polygons_to_masks
from mmseg_text.io import atomic_write_json, atomic_write_text
from mmseg_text.metrics import DiceAccumulator, dice_per_image
from mmseg_text.run_layout import EVALUATION_FILE
from mmseg_text.rle import RLEError, read_submission, rle_decode, row_label

RESULT_JSON = EVALUATION_FILE
RESULT_MARKDOWN = "evaluation.md"
_MAX_LISTED = 5  # names listed in one error line before "... and N more"


class EvaluationError(ValueError):
    """The submission and the ground truth do not match up; the message names what is wrong."""


@dataclass(frozen=True)
class GroundTruthImage:
    image_name: str  # the CSV key: the image file's base name
    json_path: Path
    image_path: Path


def find_ground_truth(gt_dir: Path, images_dir: Path) -> list[GroundTruthImage]:
    """Every ``*.json`` under ``gt_dir`` paired with its image at the same relative path under ``images_dir``."""
    if not gt_dir.is_dir():
        raise EvaluationError(f"ground-truth folder not found: {gt_dir}")
    if not images_dir.is_dir():
        raise EvaluationError(f"image folder not found: {images_dir} (pass --images)")
    found: dict[str, GroundTruthImage] = {}
    for json_path in sorted(gt_dir.rglob("*.json")):
        relative = json_path.relative_to(gt_dir).with_suffix("")
        candidates = [images_dir / relative.with_suffix(s) for s in IMAGE_SUFFIXES]
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None:
            raise EvaluationError(f"{json_path}: no image {candidates[0]} for this annotation")
        if image_path.name in found:
            raise EvaluationError(f"image name {image_path.name} occurs twice: {found[image_path.name].image_path} "
                                  f"and {image_path}; CSV rows could not tell them apart")
        found[image_path.name] = GroundTruthImage(image_path.name, json_path, image_path)
    if not found:
        raise EvaluationError(f"no annotation JSON files under {gt_dir}")
    return list(found.values())


def check_submission(frame: pd.DataFrame, images: Sequence[GroundTruthImage], catalogue: ClassCatalogue,
                     pred_path: Path) -> None:
    """Same image set on both sides, known classes only, one row per (image, class)."""
    known = set(catalogue.names)
    unknown = ~frame["class"].isin(known)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise EvaluationError(f"{pred_path}: {row_label(i)} has unknown class {frame.at[i, 'class']!r} "
                              f"(not in {catalogue.source or catalogue.name})")
    gt_names = {im.image_name for im in images}
    csv_names = set(frame["image_name"])
    missing = sorted(gt_names - csv_names)
    if missing:
        raise EvaluationError(f"{pred_path}: {len(missing)} ground-truth image(s) have no rows: {_listed(missing)}")
    extra = sorted(csv_names - gt_names)
    if extra:
        raise EvaluationError(f"{pred_path}: {len(extra)} image(s) in the CSV have no ground truth: {_listed(extra)}")
    rows_per_image = frame.groupby("image_name")["class"].nunique()
    short = rows_per_image[rows_per_image < len(catalogue)]
    if len(short):
        name = str(short.index[0])
        have = set(frame.loc[frame["image_name"] == name, "class"])
        absent = [c for c in catalogue.names if c not in have]
        raise EvaluationError(f"{pred_path}: image {name} has no row for class(es) {_listed(absent)}"
                              + (f" ({len(short)} images are incomplete)" if len(short) > 1 else ""))


def score_image(image: GroundTruthImage, rows: pd.DataFrame, catalogue: ClassCatalogue,
                pred_path: Path) -> np.ndarray:
    """Dice ``(K,)`` of one image's CSV rows against its polygons, at the image's original size."""
    size = read_image_size(image.image_path)
    polygons = load_annotation(image.json_path, known_labels=catalogue.names)
    target = polygons_to_masks(polygons, catalogue.names, out_size=size, src_size=size)
    pred = np.zeros_like(target)
    for index, class_name, rle in zip(rows.index, rows["class"], rows["rle"]):
        try:
            pred[catalogue.index(class_name)] = rle_decode(rle, size)
        except RLEError as err:
            raise EvaluationError(f"{pred_path}: {row_label(int(index))} ({image.image_name}, {class_name}): "
                                  f"malformed RLE for a {size[0]}x{size[1]} image: {err}") from None
    return dice_per_image(pred[None], target[None])[0].numpy()


def evaluate_submission(pred_path: str | Path, gt_dir: str | Path, images_dir: str | Path | None = None,
                        classes: str | Path | None = None, *, progress: bool = False,
                        facts: str | Path | None = None) -> dict:
    """Score a submission; returns the JSON-ready result (see :func:`format_markdown` for the table).

    ``facts``: a per-image CSV of derived facts (the ``*_facts.csv`` prediction writes: what its first pass found,
    as the captions used it; or a derived-meta table): Dice of the catalogue's fact subgroups apart (for hand
    bones: ``bent_wrist`` -> bent / straight wrists).
    """
    pred_path, gt_dir = Path(pred_path), Path(gt_dir)
    images_dir = Path(images_dir) if images_dir is not None else gt_dir.parent / "DCM"
    try:
        catalogue = load_catalogue(classes)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"class catalogue: {err}") from None
    images = find_ground_truth(gt_dir, images_dir)
    frame = read_submission(pred_path)
    check_submission(frame, images, catalogue, pred_path)
    rows_by_image = dict(tuple(frame.groupby("image_name", sort=False)))
    accumulator = DiceAccumulator(catalogue.names)
    for image in tqdm(images, desc="evaluate", unit="image", disable=None if progress else True):
        accumulator.add(score_image(image, rows_by_image[image.image_name], catalogue, pred_path),
                        image_ids=[image.image_name])
    summary = accumulator.summary(groups=catalogue.groups)
    if facts is not None:
        summary["subgroups"] = _fact_subgroups(accumulator, [image.image_name for image in images], Path(facts), catalogue)
    return {
        "pred": str(pred_path),
        "gt": str(gt_dir),
        "images": str(images_dir),
        "classes": catalogue.source,
        **summary,
        "class_groups": dict(zip(catalogue.names, catalogue.groups)),
        "per_image": accumulator.per_image(),
    }


def _fact_subgroups(accumulator: DiceAccumulator, names: Sequence[str], facts: Path, catalogue: ClassCatalogue) -> dict:
    """Mean Dice of each fact subgroup of the catalogue (and how many images), by the facts CSV's columns."""
    from mmseg_text.data.index import derived_by_image, load_derived_csv

    if not catalogue.fact_subgroups:
        raise EvaluationError(f"--facts {facts}: the catalogue {catalogue.source} declares no derived facts to split by")
    rows = derived_by_image(load_derived_csv(facts))
    out: dict = {"facts": str(facts)}
    for subgroup in catalogue.fact_subgroups:
        flags = [rows.get(Path(name).stem, {}).get(subgroup.fact) for name in names]
        for label, value in subgroup.labels:
            chosen = np.array([f is value for f in flags])
            out[label] = accumulator.subset(chosen).mean() if chosen.any() else None
            out[f"num_{label}"] = int(chosen.sum())
    return out


def format_markdown(result: dict) -> str:
    """Per-class table, then group means and the overall mean."""
    groups = result.get("class_groups", {})
    lines = [f"Dice of `{result['pred']}` on {result['num_images']} images", "",
             "| class | group | Dice |", "|---|---|---:|"]
    lines += [f"| {name} | {groups.get(name, '')} | {value:.4f} |" for name, value in result["per_class"].items()]
    lines += ["", "| group | mean Dice |", "|---|---:|"]
    lines += [f"| {group} | {value:.4f} |" for group, value in result.get("groups", {}).items()]
    lines += [f"| **all ({len(result['per_class'])} classes)** | **{result['mean_dice']:.4f}** |"]
    subgroups = result.get("subgroups")
    if subgroups:
        labels = [k for k in subgroups if k != "facts" and not k.startswith("num_")]
        lines += ["", f"| subgroup (from {Path(subgroups['facts']).name}) | images | mean Dice |", "|---|---:|---:|"]
        lines += [f"| {k} | {subgroups[f'num_{k}']} | {'–' if subgroups[k] is None else format(subgroups[k], '.4f')} |"
                  for k in labels]
    return "\n".join(lines) + "\n"


def write_evaluation(result: dict, out_dir: str | Path) -> Path:
    """``evaluation.json`` and ``evaluation.md`` in ``out_dir`` (atomically)."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / RESULT_JSON, result)
    atomic_write_text(out_dir / RESULT_MARKDOWN, format_markdown(result))
    return out_dir / RESULT_JSON


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(map(str, names[:_MAX_LISTED]))
    return shown + (f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")
