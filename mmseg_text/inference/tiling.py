"""One model's probability maps for a batch of images at the inference resolution: a plain forward when the
image is the model's size, else MONAI's ``sliding_window_inference`` with windows of the training size
(Gaussian blending by default), optionally at several scales. The caption context of an image is shared by
all of its windows.

``StitchedRows`` / ``blended_rows`` / ``masks_from_rows`` give the same blend without the full-resolution map:
the windows run once each, in row order, and each band of rows is resized, summed over views and members and
thresholded as soon as no later window touches it (see the section below).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmseg_text.data.preprocess import mirror_images

from mmseg_text.choices import lookup
from mmseg_text.models.conditioning import TextContext
from mmseg_text.postprocess import Claims

# predict.window_mode -> MONAI's blend mode name; the names are choices.WINDOW_MODES.
WINDOW_MODE_REGISTRY = {"gaussian": "gaussian", "constant": "constant"}


# Windows per forward when predict.window_batch_size is unset: a GPU wants a batch; on the CPU one window is the
# fastest (~0.13 s a 512 px window vs ~0.16 s in fours, 2 cores) and a quarter of the activations of four
# (~100 MB vs ~390 MB at 512 px, more than the row band itself; benchmarks/predict.py, "windows" section).
GPU_WINDOW_BATCH, CPU_WINDOW_BATCH = 4, 1


@dataclass(frozen=True)
class WindowOptions:
    overlap: float = 0.5  # fraction of a window shared with its neighbour
    mode: str = "gaussian"  # blending of overlapping windows: gaussian | constant
    batch_size: Optional[int] = None  # windows per forward pass; None: GPU_WINDOW_BATCH on CUDA, else CPU_WINDOW_BATCH
    stitch_on_cpu: bool = False  # keep the full-resolution output on the CPU (GPU memory is short)
    stitch_half: bool = True  # windows and blend maps in float16: halves the full-resolution buffers (error ~1e-3)

    @classmethod
    def from_config(cls, predict_cfg, overlap: Optional[float] = None) -> "WindowOptions":
        """The ``predict.window_*`` settings (validation tiles exactly as prediction does)."""
        return cls(overlap=predict_cfg.window_overlap if overlap is None else overlap, mode=predict_cfg.window_mode,
                   batch_size=predict_cfg.window_batch_size, stitch_on_cpu=predict_cfg.stitch_on_cpu,
                   stitch_half=predict_cfg.stitch_half)

    def windows_per_forward(self, device: torch.device | str) -> int:
        """``batch_size``, or the default for ``device`` when it is unset."""
        if self.batch_size is not None:
            return self.batch_size
        return GPU_WINDOW_BATCH if torch.device(device).type == "cuda" else CPU_WINDOW_BATCH


def model_probabilities(model: torch.nn.Module, images: torch.Tensor, context: Optional[TextContext], *,
                        window: int, options: WindowOptions = WindowOptions(),
                        memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(B, C, H, W) images -> (B, K, H, W) probabilities. ``window`` is the model's training size: images of
    that size take one forward; larger ones are tiled into windows of it."""
    def forward(x: torch.Tensor, ctx: Optional[TextContext]) -> torch.Tensor:
        return model(x.contiguous(memory_format=memory_format), ctx).float().sigmoid()

    if tuple(images.shape[-2:]) == (window, window):
        return forward(images, context)
    blend = lookup(WINDOW_MODE_REGISTRY, "predict.window_mode", options.mode)
    from monai.inferers import sliding_window_inference  # ~10 s to import: only when windows are needed

    # MONAI keeps its output, count and blend maps in the input's dtype: a float16 input halves them.
    stitch_dtype = torch.float16 if options.stitch_half else images.dtype
    outputs = []
    for b in range(images.shape[0]):  # one image at a time: every window of it reads its own caption
        ctx = None if context is None else _one(context, b)
        outputs.append(sliding_window_inference(
            images[b:b + 1].to(stitch_dtype), roi_size=(window, window),
            sw_batch_size=options.windows_per_forward(images.device),
            predictor=lambda w, ctx=ctx: forward(w.to(images.dtype), ctx).to(stitch_dtype), overlap=options.overlap,
            mode=blend, sw_device=images.device,
            device=torch.device("cpu") if options.stitch_on_cpu else images.device))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # no copy of a lone full-resolution map
    return out.to(device=images.device, dtype=images.dtype)


def multiscale(probabilities: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               scales: Sequence[float]) -> torch.Tensor:
    """Mean over ``scales`` of ``probabilities(images resized by s)``, each resized back (bilinear)."""
    size = tuple(images.shape[-2:])
    total = None
    for s in scales:
        probs = probabilities(scaled_images(images, s))
        if tuple(probs.shape[-2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    return total / len(scales)


def scaled_images(images: torch.Tensor, scale: float) -> torch.Tensor:
    """``images`` resized by ``scale`` (bilinear), the input of a multi-scale TTA view."""
    if scale == 1.0:
        return images
    return F.interpolate(images, scale_factor=float(scale), mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


def _one(context: TextContext, b: int) -> TextContext:
    """Image ``b``'s context as a batch of one (the model expands it to the windows)."""
    if context.batch_size == 1:
        return context
    return TextContext(context.tokens[b:b + 1], context.mask[b:b + 1], context.pooled[b:b + 1],
                       context.class_embeddings)


# ---- row-streamed stitching: windows -> thresholded masks without a full-resolution probability map
#
# MONAI's stitching (``model_probabilities``) holds the whole (K, H, W) output, its count map and a float32 copy:
# at 2048² and 29 classes ~0.75 GB, more than the windows' own activations. ``StitchedRows`` runs the same windows
# (MONAI's positions and Gaussian) in row order and keeps only the rows that a later window can still touch:
# at most a window's height plus BAND_ROWS, whatever H. Rows are pulled in bands by their consumer (resize to the
# original size, sum over TTA views and ensemble members, threshold), so every output row is final when it is read.
# No window runs twice: the time is the windows' time; the memory is one band of rows per view resolution, shared
# by every member and view of that resolution (each window's weight is divided by its own grid's blend count at
# once, so views whose grids differ, such as a mirrored one, add into the same band), and MONAI is not imported
# (~0.2 GB of RSS). The band is float32 (it is small: ``stitch_half`` is for the full map) and lives where the
# windows run (``stitch_on_cpu`` is for the full map too).
# Time vs memory: the alternative, stitching a few classes at a time, holds (classes per band) x H x W floats but
# runs every window once per band of classes (29 / n times the network); bands of rows cost no extra forward, so
# it is the one used. What still scales with the windows is the forward itself (predict.window_batch_size windows
# of activations at once), and the output masks: bool, or packed 8 pixels a byte (``PackedMasks``).

BAND_ROWS = 32  # rows per block of the accumulators, and per band that a consumer pulls


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Window starts along one side, as MONAI's ``dense_patch_slices``: a stride of ``int(window * (1 - overlap))``,
    the last window moved back to end at the border."""
    if size <= window:
        return [0]
    interval = max(int(window * (1 - overlap)), 1)
    count = next(d for d in range(math.ceil(size / interval)) if d * interval + window >= size) + 1
    return [min(i * interval, size - window) for i in range(count)]


def importance_map(window: int, mode: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """(window, window) blend weights, as MONAI's ``compute_importance_map`` (sigma 0.125 of the window, clamped
    at 1e-3) in float32."""
    blend = lookup(WINDOW_MODE_REGISTRY, "predict.window_mode", mode)
    if blend == "constant":
        return torch.ones(window, window, device=device)
    sigma = window * 0.125
    x = torch.arange(-(window - 1) / 2.0, (window - 1) / 2.0 + 1, dtype=torch.float, device=device)
    x = torch.exp(x ** 2 / (-2 * sigma ** 2))
    weights = x.unsqueeze(-1) * x[None]
    return weights.clamp_(min=max(weights.min().item(), 1e-3))


def window_forward(model: torch.nn.Module, context: Optional[TextContext],
                   memory_format: torch.memory_format = torch.contiguous_format
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """(n, C, w, w) windows -> (n, K, w, w) float32 probabilities; every window reads ``context`` (one image's)."""
    return lambda x: model(x.contiguous(memory_format=memory_format), context).float().sigmoid_()


@dataclass(frozen=True)
class View:
    """One input of the blend: ``forward`` over windows of ``image``, times ``weight``."""

    forward: Callable[[torch.Tensor], torch.Tensor]  # window_forward(...)
    image: torch.Tensor  # (1, C, H, W), not mirrored: views of one member share it
    weight: float = 1.0  # its share of the mean over members, TTA views and scales
    mirrored: bool = False  # the model sees the image flipped left-right; its output is flipped back
    coord_channels: bool = False  # the image's last two channels are coordinates (kept canonical when mirrored)


class TensorRows:
    """Rows of a computed (K, H, W) map."""

    def __init__(self, probs: torch.Tensor):
        self.probs = probs
        self.height, self.width = probs.shape[-2:]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.probs[:, start:stop]


class StitchedRows:
    """The Gaussian-blended mean of the windows of ``views`` (one image at one resolution: every view has the same
    size), summed with the views' weights, produced row band by row band. ``rows(start, stop)`` runs the windows
    still needed for those rows and forgets the rows above ``start``: calls must come in non-decreasing ``start``.

    The rows live in a ring of blocks of BAND_ROWS rows, allocated once (one allocation, no fragmentation): a
    window's height plus two blocks, more only if a consumer asks for taller bands. ``peak_bytes`` is its size
    (weighted sums and blend counts), whatever the image height and the number of views."""

    def __init__(self, views: Sequence[View], window: int, options: WindowOptions = WindowOptions()):
        self.views, self.window, self.options = list(views), window, options
        self.height, self.width = views[0].image.shape[-2:]
        if any(tuple(v.image.shape[-2:]) != (self.height, self.width) for v in self.views):
            raise ValueError("StitchedRows: views of one band must have one image size")
        if min(self.height, self.width) < window:
            raise ValueError(f"StitchedRows: image {self.height}x{self.width} is smaller than the {window} px window")
        self.ys = window_starts(self.height, window, options.overlap)
        self.xs = window_starts(self.width, window, options.overlap)
        self.weights = importance_map(window, options.mode, views[0].image.device)
        self.sums: Optional[torch.Tensor] = None  # (K, slots * BAND_ROWS, W): weighted, count-normalised outputs
        self.counts: Optional[torch.Tensor] = None  # (slots * BAND_ROWS, W): blend weights summed over the grid
        self.slots = -(-window // BAND_ROWS) + 2
        self.live = range(0)  # blocks held; block b sits in slot b % slots
        self.next_row = 0  # index into ys of the next window row to run
        self.final = 0  # rows above this are complete
        self.peak_bytes = 0

    def rows(self, start: int, stop: int) -> torch.Tensor:
        if start < self.live.start * BAND_ROWS:
            raise ValueError(f"rows {start}: rows above {self.live.start * BAND_ROWS} were already released")
        self.live = range(max(self.live.start, start // BAND_ROWS), max(self.live.stop, start // BAND_ROWS))
        while self.final < stop:
            self._run_window_row()
        return torch.cat([self.sums[:, s] for s in self._slices(start, stop)], dim=1)

    def _slices(self, start: int, stop: int) -> list[slice]:
        """Ring rows of image rows [start, stop), block by block."""
        out = []
        for b in range(start // BAND_ROWS, -(-stop // BAND_ROWS)):
            first = (b % self.slots) * BAND_ROWS - b * BAND_ROWS
            out.append(slice(first + max(start, b * BAND_ROWS), first + min(stop, (b + 1) * BAND_ROWS)))
        return out

    def _hold(self, stop: int, channels: int, like: torch.Tensor) -> None:
        """Make rows up to ``stop`` live: new blocks start at zero sums and their blend counts."""
        end = -(-stop // BAND_ROWS)
        if len(range(self.live.start, end)) > self.slots or self.sums is None:
            kept = [(b, self.sums[:, s], self.counts[s]) for b in self.live
                    for s in self._slices(b * BAND_ROWS, (b + 1) * BAND_ROWS)] if self.sums is not None else []
            self.slots = max(self.slots, len(range(self.live.start, end)))
            self.sums = like.new_zeros(channels, self.slots * BAND_ROWS, self.width)
            self.counts = like.new_zeros(self.slots * BAND_ROWS, self.width)
            for b, sums, counts in kept:
                (s,) = self._slices(b * BAND_ROWS, (b + 1) * BAND_ROWS)
                self.sums[:, s], self.counts[s] = sums, counts
            self.peak_bytes = max(self.peak_bytes, (self.sums.numel() + self.counts.numel()) * 4)
        for b in range(max(self.live.stop, self.live.start), end):
            (s,) = self._slices(b * BAND_ROWS, min((b + 1) * BAND_ROWS, self.height))
            self.sums[:, s] = 0
            self.counts[s] = self._count_block(b)
        self.live = range(self.live.start, max(end, self.live.stop))

    def _count_block(self, b: int) -> torch.Tensor:
        """Block ``b``'s rows of MONAI's count map: blend weights of every window, added in MONAI's order."""
        lo, hi = b * BAND_ROWS, min((b + 1) * BAND_ROWS, self.height)
        count = torch.zeros(hi - lo, self.width, device=self.weights.device)
        for y in self.ys:
            a, e = max(lo, y), min(hi, y + self.window)
            if a < e:
                for x in self.xs:
                    count[a - lo:e - lo, x:x + self.window] += self.weights[a - y:e - y]
        return count

    @torch.no_grad()
    def _run_window_row(self) -> None:
        shares: list[torch.Tensor] = []  # each window's share of the mean, once the band holds the row's blocks
        for view in self.views:
            per_forward = self.options.windows_per_forward(view.image.device)
            for first in range(0, len(self.xs), per_forward):
                self._run_batch(view, range(first, min(first + per_forward, len(self.xs))), shares)
        self.next_row += 1
        self.final = self.ys[self.next_row] if self.next_row < len(self.ys) else self.height

    def _run_batch(self, view: View, idx: range, shares: list[torch.Tensor]) -> None:
        """Windows ``idx`` of the current window row through ``view`` and into the band. Its own function so that
        the batch's crops and outputs (K x window² floats a window) are freed before the next forward, not held
        through it."""
        y, w = self.ys[self.next_row], self.window
        # a mirrored view's window i, in image columns: the mirror image of the grid's window i
        cols = [self.width - self.xs[i] - w if view.mirrored else self.xs[i] for i in idx]
        crops = torch.cat([view.image[..., y:y + w, x:x + w] for x in cols])
        probs = view.forward(mirror_images(crops, view.coord_channels) if view.mirrored else crops)
        del crops
        if not shares:
            self._hold(y + w, probs.shape[1], probs)
            count = torch.cat([self.counts[s] for s in self._slices(y, y + w)])
            shares.extend(self.weights / count[:, x:x + w] for x in self.xs)  # a window's share of the mean
        for i, x, p in zip(idx, cols, probs):
            p.mul_(shares[i] * view.weight)
            self._add(p.flip(-1) if view.mirrored else p, y, x)

    def _add(self, contribution: torch.Tensor, y: int, x: int) -> None:
        top = 0
        for s in self._slices(y, y + self.window):
            rows = s.stop - s.start
            self.sums[:, s, x:x + self.window] += contribution[:, top:top + rows]
            top += rows


class ResizedRows:
    """Rows of ``source`` resized to (height, width): ``F.interpolate(bilinear, align_corners=False)`` computed a
    band at a time (rows first, then columns; equal to the whole-map resize to float rounding)."""

    def __init__(self, source, height: int, width: int):
        self.source, self.height, self.width = source, height, width
        self.scale = torch.tensor(source.height, dtype=torch.float32) / height  # PyTorch's input / output size

    def rows(self, start: int, stop: int) -> torch.Tensor:
        if self.height == self.source.height:
            band = self.source.rows(start, stop)
        else:
            src = ((torch.arange(start, stop, dtype=torch.float32) + 0.5) * self.scale - 0.5).clamp(min=0)
            top = src.floor().long()
            bottom = torch.where(top < self.source.height - 1, top + 1, top)
            frac = (src - top).clamp(0, 1)
            first = int(top[0])
            band = self.source.rows(first, int(bottom[-1]) + 1)
            top, bottom, frac = (t.to(band.device) for t in (top - first, bottom - first, frac.view(-1, 1)))
            band = band[:, top] * (1 - frac) + band[:, bottom] * frac
        if self.width != self.source.width:
            band = F.interpolate(band[None], size=(stop - start, self.width), mode="bilinear", align_corners=False)[0]
        return band


class SumRows:
    """Rows of the sum of ``sources`` (of one size)."""

    def __init__(self, sources: Sequence):
        self.sources = list(sources)
        self.height, self.width = self.sources[0].height, self.sources[0].width

    def rows(self, start: int, stop: int) -> torch.Tensor:
        bands = iter(source.rows(start, stop) for source in self.sources)
        total = next(bands).clone()
        for band in bands:
            total += band
        return total


def blended_rows(groups: Sequence[tuple[int, Sequence[View]]], size: tuple[int, int],
                 options: WindowOptions = WindowOptions()):
    """Rows at ``size`` of the weighted sum of every view: ``groups`` are (window, views of one image size); each
    group's band is resized to ``size`` (bilinear). A group smaller than its window (a multi-scale view below the
    training size) is padded and computed whole by MONAI, as ``model_probabilities`` does."""
    sources = []
    for window, views in groups:
        h, w = views[0].image.shape[-2:]
        source = StitchedRows(views, window, options) if min(h, w) >= window else TensorRows(
            sum(v.weight * _padded_probabilities(v, window, options) for v in views))
        sources.append(source if (h, w) == tuple(size) else ResizedRows(source, *size))
    return sources[0] if len(sources) == 1 else SumRows(sources)


@torch.no_grad()
def _padded_probabilities(view: View, window: int, options: WindowOptions) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    image = mirror_images(view.image, view.coord_channels) if view.mirrored else view.image
    probs = sliding_window_inference(image, roi_size=(window, window),
                                     sw_batch_size=options.windows_per_forward(image.device),
                                     predictor=view.forward, overlap=options.overlap,
                                     mode=lookup(WINDOW_MODE_REGISTRY, "predict.window_mode", options.mode))[0]
    return probs.flip(-1) if view.mirrored else probs


def iter_rows(source, band: int = BAND_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, (K, rows, W) band) over ``source``, top to bottom."""
    for start in range(0, source.height, band):
        yield start, source.rows(start, min(start + band, source.height))


class PackedMasks:
    """Thresholded masks (K, H, W) stored 8 pixels a byte (``np.packbits`` along rows): a sequence of bool
    (H, W) class masks, each unpacked when read; ``np.asarray`` unpacks them all."""

    def __init__(self, bits: np.ndarray, width: int):
        self.bits = bits  # uint8 (K, H, ceil(W / 8))
        self.shape = (bits.shape[0], bits.shape[1], width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        return np.unpackbits(self.bits[k], axis=-1, count=self.shape[2]).view(bool)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        masks = np.unpackbits(self.bits, axis=-1, count=self.shape[2]).view(bool)
        return masks if dtype is None else masks.astype(dtype)


def masks_from_rows(source, thresholds: Sequence[float] | np.ndarray, band: int = BAND_ROWS,
                    packed: bool = False, claim_threshold: Optional[float] = None):
    """bool (K, H, W): every band of ``source`` thresholded per class as soon as it is complete; ``packed``: as
    ``PackedMasks`` (an eighth of the bytes: 15 MB instead of 122 MB for 29 classes at 2048²). ``claim_threshold``:
    also the ``postprocess.Claims`` of the same rows (the "exclusive" rule's), returned as ``(masks, claims)``."""
    out = claims = None
    for start, rows in iter_rows(source, band):
        if out is None:
            width = -(-source.width // 8) if packed else source.width
            out = np.empty((rows.shape[0], source.height, width), dtype=np.uint8 if packed else bool)
            cut = torch.as_tensor(np.asarray(thresholds, dtype=np.float32), device=rows.device).view(-1, 1, 1)
            claims = Claims.empty(rows.shape[0], source.height, source.width) if claim_threshold is not None else None
        masks = (rows > cut).cpu().numpy()
        out[:, start:start + rows.shape[1]] = np.packbits(masks, axis=-1) if packed else masks
        if claims is not None:
            claims.set_rows(start, (rows > claim_threshold).cpu().numpy())
    masks = PackedMasks(out, source.width) if packed else out
    return (masks, claims) if claim_threshold is not None else masks
