"""Prediction: image files -> batched model inputs -> averaged probability maps -> masks at original size -> CSV.

One path, in stages that a test can call alone:
  1. ``ImageFiles``: a Dataset decoding each file and applying the *exported* ``Preprocessor`` (the very
     object the training data went through), batched by a DataLoader (``predict.batch_size``);
  2. ``Predictor.probabilities``: every member model (an ensemble of one or more exported directories) and
     every TTA view, averaged, at the model resolution;
  3. ``masks_at_original_size`` + RLE rows + overlays.
Captions: with ``--with-meta`` the person's row of the metadata table; side and wrist angle (catalogues that
declare hand geometry) from one first pass with the tuned thresholds, computed once per image and shared by
every member and view. Without ``--with-meta`` captions carry no patient metadata.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mmseg_text.data.images import read_image
from mmseg_text.data.layout import person_id_from_dir
from mmseg_text.data.metadata import load_metadata, person_meta
from mmseg_text.data.preprocess import Preprocessor
from mmseg_text.data.transforms import flip_side
from mmseg_text.data.wrist import UNKNOWN_FACTS, hand_facts_from_masks
from mmseg_text.engine.export import ExportedModel, load_exported
from mmseg_text.engine.inference import find_image_files
from mmseg_text.engine.overlays import save_overlay
from mmseg_text.engine.text_side import TextSide, build_text_side
from mmseg_text.rle import rle_encode, write_submission

logger = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    with_meta: bool = False
    meta_file: Optional[str] = None  # metadata table; required with with_meta unless the config names one
    tta_hflip: Optional[bool] = None  # None -> the first member's predict.tta_hflip
    batch_size: Optional[int] = None  # None -> the first member's predict.batch_size
    overlays_dir: Optional[str] = None
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


class ImageFiles(Dataset):
    """Decoded image files as model inputs (the exported preprocessing) plus what post-processing needs."""

    def __init__(self, files: Sequence[Path], preprocess: Preprocessor):
        self.files = list(files)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_image(self.files[index])
        return {"image": self.preprocess(image), "index": index, "orig_size": tuple(image.shape[:2])}


def _collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"image": torch.stack([b["image"] for b in batch]), "index": [b["index"] for b in batch],
            "orig_size": [b["orig_size"] for b in batch]}


@dataclass
class Member:
    exported: ExportedModel
    text: Optional[TextSide]


class Predictor:
    """The members of an ensemble (one or more exported model directories) and what they share."""

    def __init__(self, checkpoints: Sequence[str | Path], options: PredictOptions):
        if not checkpoints:
            raise ValueError("--checkpoint needs at least one exported model directory")
        self.options = options
        self.device = torch.device(options.device)
        self.members = [self._member(load_exported(c)) for c in checkpoints]
        first = self.members[0].exported
        self.catalogue, self.preprocess, cfg = first.catalogue, first.preprocess, first.cfg
        for member in self.members[1:]:
            other = member.exported
            if other.catalogue.names != self.catalogue.names:
                raise ValueError(f"{other.directory}: classes differ from {first.directory}; an ensemble predicts one class list")
            if other.preprocess != self.preprocess:
                raise ValueError(f"{other.directory}: preprocessing {other.preprocess} differs from {first.directory} "
                                 f"({self.preprocess}); ensemble members must share their input size and normalisation")
        self.thresholds = np.mean([m.exported.thresholds for m in self.members], axis=0)
        self.tta = cfg.predict.tta_hflip if options.tta_hflip is None else options.tta_hflip
        self.batch_size = options.batch_size or cfg.predict.batch_size
        self.meta_table = self._load_meta(cfg) if options.with_meta else None
        self.reads_meta = any(m.text is not None and m.text.mode.uses_meta for m in self.members)

    def _member(self, exported: ExportedModel) -> Member:
        model = exported.model.to(self.device).eval()
        if exported.cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        return Member(exported, build_text_side(exported.cfg, exported.catalogue, progress=False))

    def _load_meta(self, cfg):
        path = self.options.meta_file or cfg.data.meta_file
        if not path:
            raise FileNotFoundError("--with-meta needs --meta FILE (meta_data.xlsx or .csv)")
        return load_metadata(path)

    # ---- captions
    def person_facts(self, path: Path) -> dict[str, Any]:
        """The metadata row of the image's person (``IDxxx`` folder); unknown values when absent."""
        if self.meta_table is None:
            return {}
        pid = person_id_from_dir(path.parent.name)
        if pid is None or pid not in self.meta_table.index:
            logger.warning("%s: person %s is not in the metadata table; its caption says unknown", path, pid)
        return person_meta(self.meta_table, pid) if pid is not None else {}

    def _context(self, member: Member, sides: Sequence[str], metas: Sequence[dict]):
        if member.text is None:
            return None
        captions = [member.text.caption(side, meta) for side, meta in zip(sides, metas)]
        return member.text.context(captions if member.text.mode.uses_meta else None, len(sides), self.device)

    # ---- probabilities
    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, sides: Sequence[str], metas: Sequence[dict]) -> torch.Tensor:
        """(B, K, S, S) probabilities at the model size: mean over members and TTA views (a flipped view
        flips the caption's side too)."""
        images = images.to(self.device)
        total, views = None, 0
        for member in self.members:
            fmt = torch.channels_last if member.exported.cfg.train.channels_last else torch.contiguous_format
            variants = [(images, sides, False)]
            if self.tta:
                variants.append((torch.flip(images, dims=[-1]), [flip_side(s) for s in sides], True))
            for view, view_sides, mirrored in variants:
                logits = member.exported.model(view.contiguous(memory_format=fmt), self._context(member, view_sides, metas))
                probs = logits.float().sigmoid()
                probs = torch.flip(probs, dims=[-1]) if mirrored else probs
                total = probs if total is None else total + probs
                views += 1
        return total / views

    def image_facts(self, images: torch.Tensor, metas: Sequence[dict]) -> list[dict[str, Any]]:
        """Side and wrist angle per image, from one first pass with the tuned thresholds, when the
        captions read them and the catalogue declares hand geometry; else unknown."""
        if not (self.options.with_meta and self.reads_meta and self.catalogue.hand_geometry is not None):
            return [dict(UNKNOWN_FACTS) for _ in metas]
        first = self.probabilities(images, ["unknown"] * len(metas), [{**m, **UNKNOWN_FACTS} for m in metas])
        masks = (first > torch.as_tensor(self.thresholds, dtype=first.dtype, device=first.device).view(-1, 1, 1)).cpu().numpy()
        return [hand_facts_from_masks(m, self.catalogue) for m in masks]

    def masks_at_original_size(self, probs: torch.Tensor, orig_size: tuple[int, int]) -> np.ndarray:
        """Bilinear upsampling of (K, S, S) probabilities to (H0, W0), per-class thresholds -> bool (K, H0, W0)."""
        up = F.interpolate(probs.unsqueeze(0), size=orig_size, mode="bilinear", align_corners=False)[0]
        thresholds = torch.as_tensor(self.thresholds, dtype=up.dtype, device=up.device).view(-1, 1, 1)
        return (up > thresholds).cpu().numpy()


def predict(checkpoints: str | Path | Sequence[str | Path], images: str | Path, out_csv: str | Path,
            options: PredictOptions) -> dict[str, Any]:
    """Write ``image_name,class,rle`` rows (K per image, class order) atomically; return a small report."""
    checkpoints = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    files = find_image_files(images)
    names = [p.name for p in files]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"{images}: image name(s) {clash[:3]} appear more than once; CSV rows would clash")
    predictor = Predictor(checkpoints, options)
    overlays = Path(options.overlays_dir) if options.overlays_dir else None
    loader = DataLoader(ImageFiles(files, predictor.preprocess), batch_size=predictor.batch_size, collate_fn=_collate)

    def rows() -> Iterator[tuple[str, str, str]]:
        bar = tqdm(total=len(files), desc="predict", unit="img")
        for batch in loader:
            paths = [files[i] for i in batch["index"]]
            metas = [predictor.person_facts(p) for p in paths]
            facts = predictor.image_facts(batch["image"], metas)
            metas = [{**m, "wrist_angle_deg": f["wrist_angle_deg"], "bent_wrist": f["bent_wrist"]} for m, f in zip(metas, facts)]
            probs = predictor.probabilities(batch["image"], [f["side"] for f in facts], metas)
            for path, p, size in zip(paths, probs, batch["orig_size"]):
                masks = predictor.masks_at_original_size(p, size)
                if overlays is not None:
                    save_overlay(overlays / f"{path.stem}.png", read_image(path), masks)
                for name, mask in zip(predictor.catalogue.names, masks):
                    yield path.name, name, rle_encode(mask)
            bar.update(len(paths))
        bar.close()

    count = write_submission(out_csv, rows())
    for member in predictor.members:
        if member.text is not None:
            member.text.save()  # captions encoded on demand, for the next run
    return {"images": len(files), "rows": count, "checkpoints": [str(c) for c in checkpoints],
            "tta_hflip": predictor.tta, "with_meta": options.with_meta, "csv": str(out_csv)}
