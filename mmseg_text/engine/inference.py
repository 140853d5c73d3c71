"""Batch inference: image folder -> probabilities at each image's original size -> submission CSV.

Captions at prediction time follow the training captions. With ``with_meta`` the patient's row of
the metadata table is read (a missing ID warns and says "unknown"); side and wrist angle of an
unlabelled image come from a first pass (derived from the predicted Radius / Ulna / finger-11
masks) unless the table gives them. Without ``with_meta`` the captions carry no patient metadata.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mmseg_text.catalogue import ClassCatalogue, load_catalogue
from mmseg_text.config import Config, config_from_dict
from mmseg_text.data.dataset import apply_clahe, image_to_tensor
from mmseg_text.data.images import read_image, resize_to_model
from mmseg_text.data.layout import IMAGE_SUFFIXES, person_id_from_dir
from mmseg_text.data.metadata import load_metadata, person_meta
from mmseg_text.data.transforms import flip_side
from mmseg_text.data.wrist import (BENT_WRIST_THRESHOLD_DEG, MIDDLE_METACARPAL, RADIUS, ULNA,
                                    hand_side_from_polygons, wrist_angle_from_polygons)
from mmseg_text.engine.overlays import save_overlay
from mmseg_text.engine.text_setup import InferenceText
from mmseg_text.io import atomic_write_json
from mmseg_text.models import load_model
from mmseg_text.rle import rle_encode, write_submission

logger = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    with_meta: bool = False
    meta_file: Optional[str] = None  # metadata table; required with with_meta unless the config names one
    tta_hflip: Optional[bool] = None  # None -> the checkpoint config's predict.tta_hflip
    overlays_dir: Optional[str] = None
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ImageJob:
    path: Path
    person_id: Optional[int]
    meta: dict[str, Any] = field(default_factory=dict)
    side: str = "unknown"


def find_image_files(images: str | Path) -> list[Path]:
    """PNG/DICOM files under a folder tree (or one file); none found is an error naming the path."""
    images = Path(images)
    if images.is_file():
        files = [images]
    elif images.is_dir():
        files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    else:
        raise FileNotFoundError(f"--images {images}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"--images {images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def side_and_angle_from_masks(masks: np.ndarray, catalogue: ClassCatalogue) -> tuple[str, Optional[float]]:
    """Hand side and wrist angle from predicted masks (K, H, W): the largest outline of the
    Radius, Ulna and finger-11 masks stands in for the annotation polygon. Unknown if one is empty."""
    polygons = {}
    for name in (RADIUS, ULNA, MIDDLE_METACARPAL):
        contours, _ = cv2.findContours(masks[catalogue.index(name)].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            return "unknown", None
        largest = max(contours, key=cv2.contourArea)
        if len(largest) < 3:
            return "unknown", None
        polygons[name] = largest[:, 0, :].astype(np.float64)
    try:
        return hand_side_from_polygons(polygons), float(wrist_angle_from_polygons(polygons))
    except ValueError:
        return "unknown", None


def load_thresholds(checkpoint: Path, catalogue: ClassCatalogue, default: float) -> np.ndarray:
    path = checkpoint / "thresholds.json"
    if not path.exists():
        return np.full(len(catalogue), default)
    import json

    doc = json.loads(path.read_text())
    if list(doc.get("classes", catalogue.names)) != list(catalogue.names):
        raise ValueError(f"{path}: classes differ from the catalogue {catalogue.source}")
    return np.asarray(doc["thresholds"], dtype=np.float64)


def model_input(image: np.ndarray, cfg: Config) -> torch.Tensor:
    """Grayscale uint8 (H0, W0) -> normalised (C, S, S), the same steps as the training cache + dataset."""
    resized = resize_to_model(image, cfg.data.image_size)
    if cfg.data.clahe:
        resized = apply_clahe(resized)
    return image_to_tensor(resized, cfg.data.in_chans)


class Predictor:
    """Holds the model, captions and thresholds of one checkpoint; ``probabilities(job)`` per image."""

    def __init__(self, checkpoint: str | Path, options: PredictOptions):
        self.checkpoint = Path(checkpoint)
        self.model, cfg_dict = load_model(self.checkpoint, map_location="cpu")
        self.cfg: Config = config_from_dict(cfg_dict)
        self.options = options
        self.device = torch.device(options.device)
        self.model.to(self.device).eval()
        self.memory_format = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.catalogue = load_catalogue(self.cfg.data.classes)
        self.thresholds = load_thresholds(self.checkpoint, self.catalogue, self.cfg.predict.threshold)
        self.tta = self.cfg.predict.tta_hflip if options.tta_hflip is None else options.tta_hflip
        self.text = InferenceText(self.cfg, self.catalogue) if self.cfg.text.mode != "none" else None
        self.meta = self._load_meta() if options.with_meta else None

    def _load_meta(self):
        path = self.options.meta_file or self.cfg.data.meta_file
        if not path:
            raise FileNotFoundError("--with-meta needs --meta FILE (meta_data.xlsx or .csv)")
        return load_metadata(path)

    def job_for(self, path: Path) -> ImageJob:
        pid = person_id_from_dir(path.parent.name)
        job = ImageJob(path=path, person_id=pid)
        if self.meta is not None:
            if pid is None or pid not in self.meta.index:
                logger.warning("%s: person %s is not in the metadata table; its caption says unknown", path, pid)
            job.meta = person_meta(self.meta, pid) if pid is not None else {}
        return job

    @torch.no_grad()
    def _forward(self, tensor: torch.Tensor, captions: Optional[list[str]]) -> torch.Tensor:
        context = self.text.context(captions, tensor.shape[0], self.device) if self.text else None
        return self.model(tensor.to(self.device).contiguous(memory_format=self.memory_format), context).float()

    def _captions(self, job: ImageJob, side: str) -> Optional[list[str]]:
        if self.text is None:
            return None
        return [self.text.caption({"side": side, "meta": job.meta})]

    @torch.no_grad()
    def logits(self, image: np.ndarray, job: ImageJob) -> torch.Tensor:
        """(K, S, S) logits at the model size; flip TTA averages the mirrored pass (side flipped too)."""
        tensor = model_input(image, self.cfg).unsqueeze(0)
        if self.options.with_meta and self.text is not None and self.text.uses_meta and job.meta.get("wrist_angle_deg") is None:
            # First pass: derive side and wrist angle from the predicted masks.
            first = self._forward(tensor, self._captions(job, "unknown"))[0]
            side, angle = side_and_angle_from_masks(first.sigmoid().cpu().numpy() > 0.5, self.catalogue)
            job.side = side
            job.meta = {**job.meta, "wrist_angle_deg": angle,
                        "bent_wrist": None if angle is None else abs(angle) >= BENT_WRIST_THRESHOLD_DEG}
        out = self._forward(tensor, self._captions(job, job.side))[0]
        if self.tta:
            mirrored = self._forward(torch.flip(tensor, dims=[-1]), self._captions(job, flip_side(job.side)))[0]
            out = 0.5 * (out + torch.flip(mirrored, dims=[-1]))
        return out

    def masks_at_original_size(self, logits: torch.Tensor, orig_size: tuple[int, int]) -> np.ndarray:
        """Bilinear upsampling of the logits to (H0, W0), sigmoid, per-class thresholds -> bool (K, H0, W0)."""
        up = F.interpolate(logits.unsqueeze(0), size=orig_size, mode="bilinear", align_corners=False)[0]
        probs = up.sigmoid_()
        thresholds = torch.as_tensor(self.thresholds, dtype=probs.dtype, device=probs.device).view(-1, 1, 1)
        return (probs > thresholds).cpu().numpy()


def predict(checkpoint: str | Path, images: str | Path, out_csv: str | Path, options: PredictOptions) -> dict[str, Any]:
    """Write ``image_name,class,rle`` rows (29 per image, class order) atomically; return a small report."""
    files = find_image_files(images)
    predictor = Predictor(checkpoint, options)
    overlays = Path(options.overlays_dir) if options.overlays_dir else None
    names = predictor.catalogue.names
    seen: set[str] = set()

    def rows() -> Iterator[tuple[str, str, str]]:
        for path in tqdm(files, desc="predict"):
            if path.name in seen:
                raise ValueError(f"{path}: image name {path.name} appears twice under {images}; CSV rows would clash")
            seen.add(path.name)
            image = read_image(path)
            job = predictor.job_for(path)
            logits = predictor.logits(image, job)
            masks = predictor.masks_at_original_size(logits, image.shape[:2])
            if overlays is not None:
                save_overlay(overlays / f"{path.stem}.png", image, masks)
            for name, mask in zip(names, masks):
                yield path.name, name, rle_encode(mask)

    count = write_submission(out_csv, rows())
    if predictor.text is not None:
        predictor.text.save()  # the captions of this run, for the next one
    report = {"images": len(files), "rows": count, "checkpoint": str(checkpoint), "tta_hflip": predictor.tta,
              "with_meta": options.with_meta, "csv": str(out_csv)}
    return report
