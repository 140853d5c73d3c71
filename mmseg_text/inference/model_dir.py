"""Self-contained model directories: everything prediction needs, nothing read from the repo.

    model.safetensors        weights (no pickle)
    config.yaml              the resolved run config; data.classes / text.templates point at the copies below
    model_meta.json          build arguments the config does not hold (classes, text width, size, channels)
    classes.yaml             the class catalogue the model was trained with
    caption_templates.yaml   the caption wording (text modes that make captions)
    preprocessing.json       image size, CLAHE and the encoder's normalisation (one preprocessing path)
    thresholds.json          per-class thresholds and post-processing rules tuned on validation (and, with
                             train.fit_temperature, per-class temperatures)
    val_metrics.json         the validation scores at export

``load_exported`` works from any working directory and from a non-editable install.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.config import Config, config_from_dict
from mmseg_text.data.preprocess import Preprocessor
from mmseg_text.models import TextConditionedSegmenter, load_model, save_model_dir
from mmseg_text.models.build import read_model_file
from mmseg_text.postprocess import check_rules
from mmseg_text.run_layout import (CLASSES_FILE, PREPROCESSING_FILE, TEMPLATES_FILE, THRESHOLDS_FILE,
                                   VAL_METRICS_FILE, WEIGHTS_FILE)
from mmseg_text.text.templates import load_templates


@dataclass
class ExportedModel:
    directory: Path
    model: TextConditionedSegmenter
    cfg: Config
    catalogue: ClassCatalogue
    preprocess: Preprocessor
    thresholds: np.ndarray  # (K,)
    postprocess: list[str]  # (K,) per class: "none", "largest", "attached", "exclusive", "min_area:F" (postprocess.py)
    temperatures: Optional[np.ndarray] = None  # (K,) fitted on validation (calibration.py), or None


def export_model(directory: str | Path, model: TextConditionedSegmenter, cfg: Config, catalogue: ClassCatalogue,
                 preprocess: Preprocessor, *, thresholds: Sequence[float],
                 postprocess: Optional[Sequence[str]] = None, temperatures: Optional[Sequence[float]] = None,
                 metrics: Optional[Mapping[str, Any]] = None,
                 state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> Path:
    """Write ``directory`` atomically (``save_model_dir``), with copies of the catalogue and templates."""
    doc = copy.deepcopy(cfg.to_dict())
    doc["data"]["classes"] = CLASSES_FILE  # relative: resolved against the model directory on load
    text_files = {CLASSES_FILE: Path(catalogue.source).read_text(encoding="utf-8")}
    templates = load_templates(cfg.text.templates)
    text_files[TEMPLATES_FILE] = Path(templates.source).read_text(encoding="utf-8")
    doc["text"]["templates"] = TEMPLATES_FILE
    rules = check_rules(postprocess if postprocess is not None else ["none"] * len(catalogue), len(catalogue),
                        str(directory))
    extra = {PREPROCESSING_FILE: preprocess.to_dict(),
             THRESHOLDS_FILE: {"classes": list(catalogue.names), "thresholds": [float(t) for t in thresholds],
                               "postprocess": rules,
                               **({"temperatures": [float(t) for t in temperatures]} if temperatures is not None
                                  else {})}}
    if metrics is not None:
        extra[VAL_METRICS_FILE] = dict(metrics)
    return save_model_dir(directory, model, doc, extra=extra, text_files=text_files, state_dict=state_dict)


def load_exported(directory: str | Path, map_location: str | torch.device = "cpu") -> ExportedModel:
    """Model, config, catalogue, preprocessing and thresholds of an exported model directory."""
    directory = Path(directory)
    model, doc = load_model(directory, map_location=map_location)
    for section, key, name in (("data", "classes", CLASSES_FILE), ("text", "templates", TEMPLATES_FILE)):
        if (directory / name).is_file():
            doc[section][key] = str((directory / name).resolve())
    cfg = config_from_dict(doc)
    catalogue = load_catalogue(cfg.data.classes)
    pre_path = directory / PREPROCESSING_FILE
    if not pre_path.is_file():
        raise FileNotFoundError(f"{directory}: no {PREPROCESSING_FILE}; export the model again with this version")
    preprocess = Preprocessor.from_dict(read_model_file(pre_path, json.loads, "the preprocessing"))
    thresholds, rules = np.full(len(catalogue), cfg.predict.threshold), ["none"] * len(catalogue)
    temperatures = None
    th_path = directory / THRESHOLDS_FILE
    if th_path.is_file():
        thresholds, rules = read_thresholds(th_path, catalogue.names)
        temperatures = read_temperatures(th_path, len(catalogue))
    return ExportedModel(directory=directory, model=model, cfg=cfg, catalogue=catalogue, preprocess=preprocess,
                         thresholds=thresholds, postprocess=rules, temperatures=temperatures)


def read_thresholds(path: Path, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-class thresholds and post-processing rules of a ``thresholds.json`` (a model's, or a k-fold run's
    out-of-fold ones; a file without rules means "none" for every class); a damaged file, other classes or a wrong
    count is an error naming the file."""
    doc = read_model_file(path, json.loads, "the thresholds")
    if not isinstance(doc, dict) or not isinstance(doc.get("thresholds"), list):
        raise ValueError(f"{path}: expected a mapping with a 'thresholds' list")
    if list(doc.get("classes", names)) != list(names):
        raise ValueError(f"{path}: classes differ from the models' catalogue ({len(names)} classes)")
    if len(doc["thresholds"]) != len(names):
        raise ValueError(f"{path}: {len(doc['thresholds'])} thresholds for {len(names)} classes")
    rules = doc.get("postprocess", ["none"] * len(names))
    if not isinstance(rules, list):
        raise ValueError(f"{path}: 'postprocess' must be a list of per-class rules")
    return np.asarray(doc["thresholds"], dtype=np.float64), check_rules(rules, len(names), str(path))


def read_temperatures(path: Path, num_classes: int) -> Optional[np.ndarray]:
    """The per-class temperatures of a ``thresholds.json`` (None when it has none); each must be > 0."""
    doc = read_model_file(path, json.loads, "the thresholds")
    values = doc.get("temperatures") if isinstance(doc, dict) else None
    if values is None:
        return None
    temps = np.asarray(values, dtype=np.float64) if isinstance(values, list) else np.empty(0)
    if temps.shape != (num_classes,) or not np.all(temps > 0):
        raise ValueError(f"{path}: 'temperatures' must be {num_classes} positive numbers, one per class")
    return temps


def find_exported(paths: Sequence[str | Path]) -> list[Path]:
    """Exported model directories: each path is one (it holds model.safetensors), or a run / k-fold directory
    whose exported models are found below it (``*/best``, ``fold*/best``, ...), sorted by path."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / WEIGHTS_FILE).is_file() or not path.is_dir():
            found.append(path)  # load_model names what is missing if it is not a model directory
            continue
        below = sorted(p.parent for p in path.rglob(WEIGHTS_FILE) if (p.parent / PREPROCESSING_FILE).is_file())
        if not below:
            raise FileNotFoundError(f"{path}: no model.safetensors, and no exported model below it "
                                    "(give a run's best/ folder, or a run directory holding fold*/best)")
        found += below
    if not found:
        raise ValueError("--checkpoint needs at least one exported model directory")
    return found
