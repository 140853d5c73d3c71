"""Prediction: image files -> batched inputs -> ensemble x TTA probability maps -> masks at original size -> CSV.

One path, in stages that a test can call alone:
  1. ``ImageFiles``: a Dataset decoding each file through the *exported* ``Preprocessor`` (the object the
     training data went through), at the inference resolution (``predict.resolution``; default the training
     size), batched by a DataLoader (``predict.batch_size``);
  2. ``Predictor.probabilities``: every member (one or more exported directories, or a run directory of folds)
     and every TTA view (flip, scales), averaged; an input larger than a member's training size is tiled
     into windows of that size (``inference.tiling``);
  3. ``Predictor.masks``: thresholded masks at each image's original size (``masks_at_original_size``), + RLE rows
     + overlays. With windows, ``predict.stitch_rows`` (default on) makes 2. and 3. one row-streamed pass per image
     (``tiling.blended_rows``): the same masks, without any (K, R, R) or (K, H0, W0) float map.
Captions: with ``--with-meta`` the person's row of the metadata table; side and wrist angle (catalogues that
declare hand geometry) from ``--derived-meta`` when it lists the image, else one first pass with the tuned
thresholds, computed once per image and shared by every member and view.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mmseg_text.data.images import read_image
from mmseg_text.data.index import derived_by_image, load_derived_csv
from mmseg_text.data.layout import person_id_from_dir
from mmseg_text.data.metadata import load_metadata, person_meta
from mmseg_text.data.preprocess import Preprocessor, mirror_images
from mmseg_text.data.facts import UNKNOWN_FACTS, flip_side
from mmseg_text.data.wrist import hand_facts_from_masks
from mmseg_text.calibration import scaled_probabilities
from mmseg_text.postprocess import CLAIM_THRESHOLD, postprocessed
from mmseg_text.inference.model_dir import ExportedModel, find_exported, load_exported, read_thresholds
from mmseg_text.inference.tiling import (PackedMasks, ResizedRows, TensorRows, View, WindowOptions, blended_rows,
                                         masks_from_rows, model_probabilities, multiscale, scaled_images,
                                         window_forward)
from mmseg_text.inference.image_files import find_image_files
from mmseg_text.inference.overlays import save_overlay
from mmseg_text.text.caption_encoder import CaptionEncoder, build_caption_encoder
from mmseg_text.io import atomic_write_text
from mmseg_text.rle import rle_encode, write_submission
from mmseg_text.run_layout import THRESHOLDS_FILE, WEIGHTS_FILE, facts_path

logger = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    """What the command line chose; None means the first member's ``predict.*`` config value."""

    with_meta: bool = False
    meta_file: Optional[str] = None  # metadata table; required with with_meta unless the config names one
    derived_meta: Optional[str] = None  # per-image side / wrist angle CSV (image_id, side, wrist_angle_deg, bent_wrist)
    tta_hflip: Optional[bool] = None
    tta_scales: Optional[list[float]] = None
    batch_size: Optional[int] = None
    resolution: Optional[int] = None
    window_overlap: Optional[float] = None
    weights: Optional[list[float]] = None  # one per member; None = equal
    overlays_dir: Optional[str] = None
    num_workers: Optional[int] = None  # DataLoader workers decoding images
    mixed_precision: Optional[str] = None  # no | fp16 | bf16: autocast of every member's forward
    postprocess: bool = True  # apply the per-class connected-component rules of thresholds.json (postprocess.py)
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")


class ImageFiles(Dataset):
    """Decoded image files resized to the inference resolution (the exported ``Preprocessor.resize``), as uint8
    pixels: each ensemble member then applies its own enhancement and normalisation (``Predictor.inputs``)."""

    def __init__(self, files: Sequence[Path], preprocess: Preprocessor):
        self.files = list(files)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_image(self.files[index])
        return {"pixels": torch.from_numpy(np.ascontiguousarray(self.preprocess.resize(image))), "index": index,
                "orig_size": tuple(image.shape[:2])}


def collate_images(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"pixels": torch.stack([b["pixels"] for b in batch]), "index": [b["index"] for b in batch],
            "orig_size": [b["orig_size"] for b in batch]}


@dataclass
class Member:
    exported: ExportedModel
    text: Optional[CaptionEncoder]
    weight: float = 1.0

    @property
    def window(self) -> int:
        return self.exported.preprocess.input_size


class Predictor:
    """The members of an ensemble and what they share: classes, normalisation, resolution, thresholds."""

    def __init__(self, checkpoints: Sequence[str | Path], options: PredictOptions):
        directories = find_exported(checkpoints)
        self.options = options
        self.device = torch.device(options.device)
        weights = options.weights or [1.0] * len(directories)
        if len(weights) != len(directories):
            raise ValueError(f"--weights has {len(weights)} values for {len(directories)} ensemble members")
        exported = [load_exported(d) for d in directories]
        cfg = exported[0].cfg
        self.num_workers = _chosen(options.num_workers, getattr(cfg.predict, "num_workers", 0))
        self.precision = _chosen(options.mixed_precision, getattr(cfg.predict, "mixed_precision", "no"))
        self.members = [self._member(e, w) for e, w in zip(exported, weights)]
        first = self.members[0].exported
        self.catalogue = first.catalogue
        for member in self.members[1:]:
            _check_compatible(first, member.exported)
        resolution = options.resolution or cfg.predict.resolution or first.preprocess.image_size
        self.preprocess = replace(first.preprocess, image_size=int(resolution))  # the resize every member reads
        self.thresholds, self.postprocess = _run_thresholds(checkpoints, self.catalogue.names,
                                                            default=_member_thresholds(self.members))
        if not options.postprocess:
            self.postprocess = ["none"] * len(self.catalogue)
        self.tta = _chosen(options.tta_hflip, cfg.predict.tta_hflip)
        self.scales = list(_chosen(options.tta_scales, cfg.predict.tta_scales))
        self.batch_size = _chosen(options.batch_size, cfg.predict.batch_size)
        self.windows = WindowOptions.from_config(cfg.predict, overlap=options.window_overlap)
        # predict.stitch_rows (config.py's PredictConfig, default True; older exported configs lack the key)
        self.stitch_rows = bool(getattr(cfg.predict, "stitch_rows", True))
        self.meta_table = self._load_meta(cfg) if options.with_meta else None
        self.derived = derived_by_image(load_derived_csv(options.derived_meta)) if options.derived_meta else {}
        self.reads_meta = any(m.text is not None and m.text.mode.uses_meta for m in self.members)

    def inputs(self, pixels: torch.Tensor, member: Member) -> torch.Tensor:
        """(B, R, R) uint8 pixels -> (B, C, R, R) input of ``member``: its own CLAHE setting and normalisation."""
        pre = member.exported.preprocess
        return torch.stack([pre.to_tensor(pre.enhance(p.numpy())) for p in pixels.cpu()]).to(self.device)

    def _member(self, exported: ExportedModel, weight: float) -> Member:
        model = exported.model.to(self.device).eval()
        if exported.cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.precision != "no":
            exported = replace(exported, model=AutocastForward(model, self.precision, self.device.type))
        return Member(exported, build_caption_encoder(exported.cfg, exported.catalogue, progress=False), float(weight))

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
    def probabilities(self, pixels: torch.Tensor, sides: Sequence[str], metas: Sequence[dict], *,
                      calibrated: bool = False) -> torch.Tensor:
        """(B, K, R, R) probabilities at the inference resolution: the weighted mean over members of the mean
        over TTA views (a flipped view flips the caption's side too; scales resize the input). ``calibrated``:
        each member's probabilities rescaled by its fitted temperatures (``train.fit_temperature``) before the
        mean, for callers that read probabilities; the tuned thresholds (and so the masks) are for raw ones."""
        total = None
        for member in self.members:
            images = self.inputs(pixels, member)
            fmt = torch.channels_last if member.exported.cfg.train.channels_last else torch.contiguous_format
            views = [(images, list(sides), False)]
            if self.tta:
                views.append((mirror_images(images, member.exported.preprocess.coord_channels),
                              [flip_side(s) for s in sides], True))
            member_sum = None
            for view, view_sides, mirrored in views:
                context = self._context(member, view_sides, metas)
                probs = multiscale(lambda x: model_probabilities(member.exported.model, x, context, window=member.window,
                                                                 options=self.windows, memory_format=fmt),
                                   view, self.scales)
                probs = torch.flip(probs, dims=[-1]) if mirrored else probs
                member_sum = probs if member_sum is None else member_sum + probs
            member_probs = member_sum / len(views)
            if calibrated:
                member_probs = self._calibrated(member, member_probs)
            weighted = member.weight * member_probs
            total = weighted if total is None else total + weighted
        return total / sum(m.weight for m in self.members)

    @staticmethod
    def _calibrated(member: "Member", probs: torch.Tensor) -> torch.Tensor:
        temps = member.exported.temperatures
        if temps is None:
            raise ValueError(f"{member.exported.directory}: no fitted temperatures in its thresholds.json; "
                             "train with train.fit_temperature=true for calibrated probabilities")
        return scaled_probabilities(probs, torch.as_tensor(temps, dtype=torch.float32))

    def image_facts(self, pixels: torch.Tensor, paths: Sequence[Path], metas: Sequence[dict]) -> list[dict[str, Any]]:
        """Side and wrist angle per image when the captions read them and the catalogue declares hand geometry:
        from ``--derived-meta`` when it lists the image, else from one first pass with the tuned thresholds."""
        facts = [dict(UNKNOWN_FACTS) for _ in metas]
        if not (self.options.with_meta and self.reads_meta and self.catalogue.hand_geometry is not None):
            return facts
        todo = []
        for i, path in enumerate(paths):
            if path.stem in self.derived:
                facts[i] = dict(self.derived[path.stem])
            else:
                todo.append(i)
        if todo:
            size = tuple(pixels.shape[-2:])  # masks at the inference resolution
            first = self.masks(pixels[todo], ["unknown"] * len(todo), [{**metas[i], **UNKNOWN_FACTS} for i in todo],
                               [size] * len(todo))
            for i, masks in zip(todo, first):
                facts[i] = hand_facts_from_masks(masks, self.catalogue)
        return facts

    @property
    def tiles(self) -> bool:
        """Whether some member sees some view through windows (a view's size is not the member's window)."""
        size = self.preprocess.image_size
        return any(math.floor(size * s) != m.window for m in self.members for s in self.scales)

    @torch.no_grad()
    def masks(self, pixels: torch.Tensor, sides: Sequence[str], metas: Sequence[dict],
              sizes: Sequence[tuple[int, int]]) -> Iterator[np.ndarray | PackedMasks]:
        """Masks (K, H0, W0) per image of the batch, at ``sizes``: the thresholded ``probabilities``, resized; a bool
        array, or ``PackedMasks`` from the row path (both: ``masks[k]`` is class k's bool mask; ``np.asarray``),
        with each class's post-processing rule applied as the class is read (``postprocess.PostProcessed``).

        Without windows: one batched ``probabilities`` and ``masks_at_original_size``. With windows and
        ``predict.stitch_rows``: one image at a time, ``row_source`` blends, averages, resizes and thresholds a
        band of rows as soon as it is final, into packed bits. The windows run once each either way (no extra
        time); what is held is one band (a window's height) of K float32 rows per view resolution and the packed
        masks, instead of the (K, R, R) float maps of every member and view plus MONAI's own buffers. The images of
        a batch then go through the network one by one, as the windows of ``model_probabilities`` already do.
        """
        claim = CLAIM_THRESHOLD if "exclusive" in self.postprocess else None
        if not (self.stitch_rows and self.tiles):
            for probs, size in zip(self.probabilities(pixels, sides, metas), sizes):
                masks = masks_from_rows(self._rows_at(probs, size), self.thresholds, claim_threshold=claim)
                yield self._postprocessed(masks, claim)
            return
        for b, size in enumerate(sizes):
            masks = masks_from_rows(self.row_source(pixels[b:b + 1], sides[b:b + 1], metas[b:b + 1], size),
                                    self.thresholds, packed=True, claim_threshold=claim)
            yield self._postprocessed(masks, claim)

    def _postprocessed(self, masks, claim: Optional[float]):
        """The per-class rules on ``masks_from_rows``'s output (with its claims for "exclusive")."""
        masks, claims = masks if claim is not None else (masks, None)
        return postprocessed(masks, self.postprocess, self.catalogue.attached_to, claims)

    def row_source(self, pixels: torch.Tensor, sides: Sequence[str], metas: Sequence[dict], size: tuple[int, int]):
        """One image's (``pixels`` (1, R, R)) ``probabilities`` at ``size``, as bands of rows (``tiling.blended_rows``):
        every member x flip x scale is a ``View`` weighted by its share of the mean; views of one scale and window
        share one band of rows; the sum at R is resized to ``size`` last, as ``masks_at_original_size`` does."""
        total = sum(m.weight for m in self.members)
        flips = [(list(sides), False)] + ([([flip_side(s) for s in sides], True)] if self.tta else [])
        inputs: list[tuple[Any, list[torch.Tensor]]] = []  # members with one preprocessing share their input
        groups: dict[tuple[int, int], list[View]] = {}  # (scale, window) -> views
        for member in self.members:
            pre = member.exported.preprocess
            scaled = next((images for p, images in inputs if p == pre), None)
            if scaled is None:
                images = self.inputs(pixels, member)
                scaled = [scaled_images(images, s) for s in self.scales]
                inputs.append((pre, scaled))
            fmt = torch.channels_last if member.exported.cfg.train.channels_last else torch.contiguous_format
            weight = member.weight / (total * len(flips) * len(self.scales))
            for view_sides, mirrored in flips:
                forward = window_forward(member.exported.model, self._context(member, view_sides, metas), fmt)
                for k, images in enumerate(scaled):
                    groups.setdefault((k, member.window), []).append(
                        View(forward, images, weight, mirrored, coord_channels=pre.coord_channels))
        resolution = tuple(pixels.shape[-2:])
        source = blended_rows([(window, views) for (_, window), views in groups.items()], resolution, self.windows)
        return source if tuple(size) == resolution else ResizedRows(source, *size)

    def masks_at_original_size(self, probs: torch.Tensor, orig_size: tuple[int, int]) -> np.ndarray:
        """Bilinear upsampling of (K, R, R) probabilities to (H0, W0), per-class thresholds -> bool (K, H0, W0);
        a band of rows at a time (``tiling.ResizedRows``): no (K, H0, W0) float map."""
        return masks_from_rows(self._rows_at(probs, orig_size), self.thresholds)

    @staticmethod
    def _rows_at(probs: torch.Tensor, size: tuple[int, int]):
        source = TensorRows(probs)
        return source if tuple(probs.shape[-2:]) == tuple(size) else ResizedRows(source, *size)


class AutocastForward(torch.nn.Module):
    """``module``'s forward under ``torch.autocast`` (fp16 | bf16), its output cast back to float32: the windows,
    blends and thresholds downstream keep float32. ``module`` stays reachable for hooks and attributes."""

    DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

    def __init__(self, module: torch.nn.Module, precision: str, device_type: str):
        super().__init__()
        if precision not in self.DTYPES:
            raise ValueError(f"mixed precision {precision!r}: expected one of no, {', '.join(self.DTYPES)}")
        if precision == "fp16" and device_type == "cpu":
            raise ValueError("--mixed-precision fp16 needs a GPU (float16 convolutions on CPU are slow); "
                             "use bf16 on CPU, or no")
        self.module, self.dtype, self.device_type = module, self.DTYPES[precision], device_type

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return out.float()


def _chosen(value: Any, default: Any) -> Any:
    """A command-line choice, or the model config's value when the option was left out (None)."""
    return default if value is None else value


def _check_compatible(first: ExportedModel, other: ExportedModel) -> None:
    if other.catalogue.names != first.catalogue.names:
        raise ValueError(f"{other.directory}: classes differ from {first.directory}; an ensemble predicts one class list")
    if other.preprocess.in_chans != first.preprocess.in_chans:
        raise ValueError(f"{other.directory}: {other.preprocess.in_chans} input channels, {first.directory} has "
                         f"{first.preprocess.in_chans}")


def _member_thresholds(members: Sequence[Member]) -> tuple[np.ndarray, list[str]]:
    """The members' thresholds averaged (weighted), and per class the rule that carries more than half the weight
    ("none" otherwise: a rule is applied only where the held-out data of most of the ensemble favoured it)."""
    total = sum(m.weight for m in members)
    thresholds = sum(m.weight * m.exported.thresholds for m in members) / total
    rules = []
    for k in range(len(thresholds)):
        weight_of: dict[str, float] = {}
        for m in members:
            weight_of[m.exported.postprocess[k]] = weight_of.get(m.exported.postprocess[k], 0.0) + m.weight
        rule, weight = max(weight_of.items(), key=lambda item: item[1])
        rules.append(rule if weight / total > 0.5 else "none")
    return thresholds, rules


def _run_thresholds(checkpoints: Sequence[str | Path], names: Sequence[str],
                    default: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, list[str]]:
    """Thresholds and post-processing rules a run directory provides for its ensemble (``thresholds.json`` beside
    its folds, tuned on out-of-fold predictions); else ``default`` (``_member_thresholds``)."""
    for path in map(Path, checkpoints):
        doc_path = path / THRESHOLDS_FILE
        if path.is_dir() and not (path / WEIGHTS_FILE).exists() and doc_path.is_file():
            logger.info("thresholds of the ensemble from %s", doc_path)
            return read_thresholds(doc_path, names)
    return default


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
    loader = DataLoader(ImageFiles(files, predictor.preprocess), batch_size=predictor.batch_size,
                        collate_fn=collate_images, num_workers=predictor.num_workers,
                        persistent_workers=False, pin_memory=predictor.device.type == "cuda")

    facts_rows: list[dict[str, Any]] = []

    def rows() -> Iterator[tuple[str, str, str]]:
        with tqdm(total=len(files), desc="predict", unit="img") as bar:  # closed before any error is printed
            for batch in loader:
                paths = [files[i] for i in batch["index"]]
                metas = [predictor.person_facts(p) for p in paths]
                facts = predictor.image_facts(batch["pixels"], paths, metas)
                facts_rows.extend({"image_id": p.stem, "image_name": p.name, **f} for p, f in zip(paths, facts))
                metas = [{**m, "wrist_angle_deg": f["wrist_angle_deg"], "bent_wrist": f["bent_wrist"]}
                         for m, f in zip(metas, facts)]
                images_masks = predictor.masks(batch["pixels"], [f["side"] for f in facts], metas, batch["orig_size"])
                for path, masks in zip(paths, images_masks):
                    if overlays is not None:
                        save_overlay(overlays / f"{path.stem}.png", read_image(path), masks)
                    for name, mask in zip(predictor.catalogue.names, masks):
                        yield path.name, name, rle_encode(mask)
                bar.update(len(paths))

    count = write_submission(out_csv, rows())
    facts_csv = None
    if any(row["side"] != "unknown" or row["wrist_angle_deg"] is not None for row in facts_rows):
        # what the captions said of each image: the bent-wrist subgroup of mmseg-evaluate --facts, or --derived-meta
        facts_csv = facts_path(out_csv)
        atomic_write_text(facts_csv, pd.DataFrame(facts_rows).to_csv(index=False))
    for member in predictor.members:
        if member.text is not None:
            member.text.save()  # captions encoded on demand, for the next run
    return {"images": len(files), "rows": count, "members": [str(m.exported.directory) for m in predictor.members],
            "resolution": predictor.preprocess.image_size, "tta_hflip": predictor.tta, "tta_scales": predictor.scales,
            "with_meta": options.with_meta, "csv": str(out_csv), "facts_csv": str(facts_csv) if facts_csv else None}
