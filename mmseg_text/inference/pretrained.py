"""``save_pretrained`` / ``from_pretrained``: a model directory in the Hugging Face hub layout, loadable offline.

A model directory (``model_dir.py``) already holds what the hub mixins write: ``model.safetensors`` at its root
and the config beside it. ``save_pretrained`` re-exports a loaded model into a folder with a model card
(``README.md``, front matter for the hub), ready for ``huggingface-cli upload``; ``from_pretrained`` takes a local
folder, or a hub repo id resolved by ``huggingface_hub.snapshot_download`` (from the local cache only when
``HF_HUB_OFFLINE=1`` or ``local_files_only``), so a model downloaded once loads with no network.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from mmseg_text.inference.model_dir import ExportedModel, export_model, load_exported
from mmseg_text.io import atomic_write_text
from mmseg_text.run_layout import VAL_METRICS_FILE, WEIGHTS_FILE

MODEL_CARD = "README.md"


def save_pretrained(model: ExportedModel, directory: str | Path) -> Path:
    """Write ``model`` as a model directory with a model card; ``from_pretrained(directory)`` loads it back."""
    directory = Path(directory)
    metrics_path = model.directory / VAL_METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    export_model(directory, model.model, model.cfg, model.catalogue, model.preprocess, thresholds=model.thresholds,
                 postprocess=model.postprocess, temperatures=model.temperatures, metrics=metrics)
    atomic_write_text(directory / MODEL_CARD, model_card(model, metrics))
    return directory


def model_card(model: ExportedModel, metrics: Optional[dict]) -> str:
    cfg = model.cfg
    score = (metrics or {}).get("mean_dice")
    lines = ["---", "library_name: mmseg-text", "pipeline_tag: image-segmentation",
             "tags: [medical-imaging, x-ray, hand-bones, text-conditioned-segmentation]", "---", "",
             f"# {model.directory.name}: {len(model.catalogue)}-class hand-bone segmentation", "",
             f"- encoder `{cfg.model.encoder}`, conditioning `{model.model.conditioning}`, text mode `{cfg.text.mode}`",
             f"- input {model.preprocess.input_size} px, {model.preprocess.input_channels} channels"]
    if score is not None:
        lines.append(f"- validation mean Dice {float(score):.4f}")
    lines += ["", "```python", "from mmseg_text.inference.pretrained import from_pretrained",
              "model = from_pretrained(\"path/or/hub-id\")  # ExportedModel: .model, .preprocess, .thresholds",
              "```", "", "or `mmseg-predict --checkpoint <this folder> --images DIR --out submission.csv`.", "",
              "Classes: " + ", ".join(model.catalogue.names), ""]
    return "\n".join(lines)


def from_pretrained(name_or_path: str | Path, *, revision: Optional[str] = None, cache_dir: Optional[str] = None,
                    local_files_only: Optional[bool] = None,
                    map_location: str | torch.device = "cpu") -> ExportedModel:
    """A model directory on disk, else a hub repo id (``owner/name``) from the hub or its local cache."""
    path = Path(name_or_path)
    if path.is_dir():
        return load_exported(path, map_location=map_location)
    if path.exists() or str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"{name_or_path}: not a model directory (one holding {WEIGHTS_FILE}) "
                                "and not a hub repo id of the form owner/name")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = bool(local_files_only) or bool(constants.HF_HUB_OFFLINE)
    try:
        folder = snapshot_download(str(name_or_path), revision=revision, cache_dir=cache_dir, local_files_only=offline)
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"{name_or_path}: not in the local hub cache{f' {cache_dir}' if cache_dir else ''} and the hub is "
            f"{'off (HF_HUB_OFFLINE=1 or local_files_only)' if offline else 'unreachable'}; download it once where "
            "the hub is reachable (huggingface-cli download), or give the model folder's path") from err
    return load_exported(folder, map_location=map_location)
