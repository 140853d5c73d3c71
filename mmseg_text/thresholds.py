"""Per-class threshold tuning from sufficient statistics (the Dice counts of ``metrics.py``).

For every image, class and candidate threshold only the three Dice counts are kept, so a validation
pass can sweep many thresholds without storing probability maps, and counts from several ranks or
batches concatenate exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from mmseg_text.io import atomic_path
from mmseg_text.metrics import SMOOTH, ArrayLike, _as_tensor, _check_pair, _zip_strict, dice_from_counts

DEFAULT_THRESHOLD_CANDIDATES = np.linspace(0.1, 0.9, 17)  # 0.10, 0.15, ..., 0.90
# Pixels handled per chunk by the threshold sweep (bounds its int64 bin-index buffer to ~128 MB).
_SWEEP_CHUNK_PIXELS = 1 << 24


@dataclass
class SweepCounts:
    """Per image, class and candidate threshold: the Dice counts of ``probs > candidate``.

    ``intersection`` and ``pred_sum`` are ``(N, K, T)``, ``target_sum`` is ``(N, K)``; all int64. This is
    all threshold tuning needs, so probability maps can be dropped batch by batch. In distributed
    evaluation, gather the three tensors with ``gather_for_metrics`` and :meth:`concat` them.
    """

    candidates: np.ndarray  # (T,) float64, ascending
    intersection: torch.Tensor
    pred_sum: torch.Tensor
    target_sum: torch.Tensor

    def __len__(self) -> int:
        return int(self.target_sum.shape[0])

    def dice(self, smooth: float = SMOOTH) -> torch.Tensor:
        """Per-image Dice at every candidate, ``(N, K, T)`` float64."""
        return dice_from_counts(self.intersection, self.pred_sum, self.target_sum.unsqueeze(-1), smooth)

    def mean_dice(self, smooth: float = SMOOTH) -> np.ndarray:
        """Mean over images of the per-image Dice, ``(K, T)``: each class's curve over the candidates."""
        if len(self) == 0:
            raise ValueError("no images in the threshold sweep")
        return self.dice(smooth).mean(dim=0).cpu().numpy()

    @staticmethod
    def concat(parts: Sequence["SweepCounts"]) -> "SweepCounts":
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        for p in parts[1:]:
            if not np.array_equal(p.candidates, parts[0].candidates):
                raise ValueError("sweep counts were computed with different candidate thresholds")
        return SweepCounts(
            candidates=parts[0].candidates,
            intersection=torch.cat([p.intersection.cpu() for p in parts]),
            pred_sum=torch.cat([p.pred_sum.cpu() for p in parts]),
            target_sum=torch.cat([p.target_sum.cpu() for p in parts]),
        )


def threshold_sweep_counts(probs: ArrayLike, target: ArrayLike,
                           candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES) -> SweepCounts:
    """Dice counts of ``probs > t`` for every candidate ``t`` in one pass over ``probs`` ``(B, K, H, W)``.

    Each pixel's bin (the number of candidates below its probability) is histogrammed per image and
    class, over all pixels and over target pixels; reverse cumulative sums of the bins then give the
    predicted and intersecting pixel counts for every threshold at once. Targets are binarised (> 0.5).
    """
    probs_t, target_t = _as_tensor(probs), _as_tensor(target)
    _check_pair(probs_t, target_t)
    if not probs_t.is_floating_point():
        raise TypeError(f"probabilities must be floating point, got {probs_t.dtype}")
    cand = np.asarray(candidates, dtype=np.float64).reshape(-1)
    if cand.size == 0 or np.any(np.diff(cand) <= 0):
        raise ValueError("candidate thresholds must be a non-empty, strictly increasing sequence")
    target_b = target_t if target_t.dtype == torch.bool else target_t > 0.5
    batch, classes = probs_t.shape[:2]
    num_bins = cand.size + 1
    flat_probs = probs_t.reshape(batch * classes, -1)
    flat_target = target_b.reshape(batch * classes, -1)
    # Compare in the probabilities' own dtype so that the counts match threshold_predictions exactly.
    boundaries = torch.as_tensor(cand, device=probs_t.device).to(probs_t.dtype).contiguous()
    all_hist = torch.zeros(batch * classes, num_bins, dtype=torch.int64, device=probs_t.device)
    hit_hist = torch.zeros_like(all_hist)
    rows_per_chunk = max(1, _SWEEP_CHUNK_PIXELS // max(1, flat_probs.shape[1]))
    for start in range(0, flat_probs.shape[0], rows_per_chunk):
        chunk = flat_probs[start:start + rows_per_chunk]
        n = chunk.shape[0]
        # bucketize(right=False) = number of boundaries strictly below the value; `p > t_j` <=> bin > j.
        bins = torch.bucketize(chunk, boundaries, right=False)
        bins += torch.arange(n, device=bins.device).unsqueeze(1) * num_bins
        all_hist[start:start + n] = torch.bincount(bins.reshape(-1), minlength=n * num_bins).view(n, num_bins)
        hits = bins[flat_target[start:start + n]]
        hit_hist[start:start + n] = torch.bincount(hits, minlength=n * num_bins).view(n, num_bins)
    # count of pixels with bin >= j + 1, for j = 0..T-1
    pred_sum = all_hist.flip(1).cumsum(1).flip(1)[:, 1:]
    intersection = hit_hist.flip(1).cumsum(1).flip(1)[:, 1:]
    return SweepCounts(
        candidates=cand,
        intersection=intersection.reshape(batch, classes, -1),
        pred_sum=pred_sum.reshape(batch, classes, -1),
        target_sum=hit_hist.sum(1).reshape(batch, classes),
    )


def tune_thresholds(probs: Union[SweepCounts, ArrayLike, Iterable[ArrayLike]],
                    targets: Union[ArrayLike, Iterable[ArrayLike], None] = None,
                    candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES,
                    *, smooth: float = SMOOTH) -> np.ndarray:
    """Per-class thresholds ``(K,)`` maximising each class's mean per-image Dice on a validation split.

    ``probs`` is either :class:`SweepCounts` (already accumulated, ``targets`` None), one probability
    tensor ``(B, K, H, W)`` with its ``targets``, or an iterable of probability batches with a matching
    iterable of target batches; batches are reduced to counts one at a time. Ties go to the candidate
    nearest 0.5 (so a class that is empty everywhere keeps the usual 0.5 when it is a candidate).
    """
    if isinstance(probs, SweepCounts):
        if targets is not None:
            raise ValueError("targets must be None when tuning from SweepCounts")
        counts = probs
    else:
        if targets is None:
            raise ValueError("targets are required with probabilities")
        if isinstance(probs, (torch.Tensor, np.ndarray)):
            probs, targets = [probs], [targets]
        parts = []
        for batch_probs, batch_targets in _zip_strict(probs, targets):
            parts.append(threshold_sweep_counts(batch_probs, batch_targets, candidates))
        counts = SweepCounts.concat(parts)
    return best_thresholds(counts, smooth=smooth)


def best_thresholds(counts: SweepCounts, *, smooth: float = SMOOTH) -> np.ndarray:
    """Argmax over candidates of each class's mean Dice curve, ties to the candidate nearest 0.5."""
    curve = counts.mean_dice(smooth)  # (K, T)
    best = curve.max(axis=1, keepdims=True)
    is_best = np.isclose(curve, best, rtol=0.0, atol=1e-12)
    distance = np.where(is_best, np.abs(counts.candidates - 0.5)[None, :], np.inf)
    return counts.candidates[distance.argmin(axis=1)]


def save_sweep(path: Path, counts: SweepCounts) -> None:
    """``counts`` as an ``.npz`` (atomically): a fold's out-of-fold statistics, ~100 KB."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, candidates=counts.candidates, intersection=counts.intersection.numpy(),
                     pred_sum=counts.pred_sum.numpy(), target_sum=counts.target_sum.numpy())


def load_sweep(path: Path) -> SweepCounts:
    with np.load(path) as doc:
        return SweepCounts(candidates=doc["candidates"], intersection=torch.from_numpy(doc["intersection"]),
                           pred_sum=torch.from_numpy(doc["pred_sum"]), target_sum=torch.from_numpy(doc["target_sum"]))
