"""Per-class threshold tuning from sufficient statistics (the Dice counts of ``metrics.py``).

For every image, class and candidate threshold only the three Dice counts are kept, so a validation
pass can sweep many thresholds without storing probability maps, and counts from several ranks or
batches concatenate exactly. With ``components``, the same counts are also kept for the mask after each
connected-component rule (``postprocess.py``: the largest component, small objects dropped, the components that
touch the attached bone, the pixels no other class claims), so the threshold and the post-processing rule of a
class are chosen together, on validation or on out-of-fold counts, from the same statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from mmseg_text.choices import POSTPROCESS_RULES
from mmseg_text.io import atomic_path
from mmseg_text.metrics import SMOOTH, ArrayLike, _as_tensor, _check_pair, _zip_strict, dice_from_counts
from mmseg_text.postprocess import (CLAIM_THRESHOLD, Claims, check_rules, component_rule_counts,
                                    joint_neighbours, near)

DEFAULT_THRESHOLD_CANDIDATES = np.linspace(0.1, 0.9, 17)  # 0.10, 0.15, ..., 0.90
TUNED_RULES = tuple(r for r in POSTPROCESS_RULES if r != "none")  # what train.tune_postprocess tries per class
# Pixels handled per chunk by the threshold sweep (bounds its int64 bin-index buffer to ~128 MB).
_SWEEP_CHUNK_PIXELS = 1 << 24


@dataclass
class SweepCounts:
    """Per image, class and candidate threshold: the Dice counts of ``probs > candidate``.

    ``intersection`` and ``pred_sum`` are ``(N, K, T)``, ``target_sum`` is ``(N, K)``; all int64. This is
    all threshold tuning needs, so probability maps can be dropped batch by batch. In distributed
    evaluation, gather the tensors with ``gather_for_metrics`` and :meth:`concat` them. With components, the same
    two counts after each post-processing rule of ``rules`` are ``(N, R, K, T)``.
    """

    candidates: np.ndarray  # (T,) float64, ascending
    intersection: torch.Tensor
    pred_sum: torch.Tensor
    target_sum: torch.Tensor
    # the two counts after each of ``rules`` (postprocess.py), (N, R, K, T); None: not computed
    rule_intersection: Optional[torch.Tensor] = None
    rule_pred_sum: Optional[torch.Tensor] = None
    rules: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.target_sum.shape[0])

    @property
    def has_components(self) -> bool:
        return self.rule_intersection is not None

    def dice(self, smooth: float = SMOOTH, rule: str = "none") -> torch.Tensor:
        """Per-image Dice at every candidate, ``(N, K, T)`` float64, of the masks after post-processing ``rule``."""
        if rule == "none":
            return dice_from_counts(self.intersection, self.pred_sum, self.target_sum.unsqueeze(-1), smooth)
        if not self.has_components or rule not in self.rules:
            raise ValueError(f"no sweep counts for post-processing rule {rule!r}")
        r = self.rules.index(rule)
        return dice_from_counts(self.rule_intersection[:, r], self.rule_pred_sum[:, r],
                                self.target_sum.unsqueeze(-1), smooth)

    def mean_dice(self, smooth: float = SMOOTH, rule: str = "none") -> np.ndarray:
        """Mean over images of the per-image Dice, ``(K, T)``: each class's curve over the candidates."""
        if len(self) == 0:
            raise ValueError("no images in the threshold sweep")
        return self.dice(smooth, rule).mean(dim=0).cpu().numpy()

    @staticmethod
    def concat(parts: Sequence["SweepCounts"]) -> "SweepCounts":
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        for p in parts[1:]:
            if not np.array_equal(p.candidates, parts[0].candidates):
                raise ValueError("sweep counts were computed with different candidate thresholds")
        # a part without component counts, or with other rules, drops them for all
        components = all(p.has_components and p.rules == parts[0].rules for p in parts)

        def cat(name: str) -> Optional[torch.Tensor]:
            return torch.cat([getattr(p, name).cpu() for p in parts]) if components else None

        return SweepCounts(
            candidates=parts[0].candidates,
            intersection=torch.cat([p.intersection.cpu() for p in parts]),
            pred_sum=torch.cat([p.pred_sum.cpu() for p in parts]),
            target_sum=torch.cat([p.target_sum.cpu() for p in parts]),
            rule_intersection=cat("rule_intersection"),
            rule_pred_sum=cat("rule_pred_sum"),
            rules=parts[0].rules if components else (),
        )


def threshold_sweep_counts(probs: ArrayLike, target: ArrayLike,
                           candidates: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_CANDIDATES,
                           *, components: bool = False, rules: Sequence[str] = TUNED_RULES,
                           attached_to: Optional[Sequence[Optional[int]]] = None) -> SweepCounts:
    """Dice counts of ``probs > t`` for every candidate ``t`` in one pass over ``probs`` ``(B, K, H, W)``.

    Each pixel's bin (the number of candidates below its probability) is histogrammed per image and
    class, over all pixels and over target pixels; reverse cumulative sums of the bins then give the
    predicted and intersecting pixel counts for every threshold at once. Targets are binarised (> 0.5).
    ``components``: also the counts of each mask after each post-processing rule of ``rules`` (one labelling per
    image, class and candidate whose mask has more than one pixel, for all rules, on the CPU: ~0.2 s per image of
    29 classes at 256²). ``attached_to`` (the catalogue's): for the "attached" rule, the bone each class touches,
    taken as ``probs > 0.5`` of that class without its own rule (an approximation of prediction, where the
    attached bone has its tuned threshold and rule); for "exclusive", the pixels other classes claim (``probs >
    CLAIM_THRESHOLD``, as at prediction), but for the bones the class articulates with.
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
    counts = SweepCounts(
        candidates=cand,
        intersection=intersection.reshape(batch, classes, -1),
        pred_sum=pred_sum.reshape(batch, classes, -1),
        target_sum=hit_hist.sum(1).reshape(batch, classes),
    )
    if components:
        counts.rules = tuple(check_rules(rules, len(rules), "the tuned post-processing rules"))
        counts.rule_intersection, counts.rule_pred_sum = _component_rule_counts(
            probs_t, target_b, boundaries, counts.pred_sum, counts.intersection, counts.rules, attached_to)
    return counts


def _component_rule_counts(probs: torch.Tensor, target: torch.Tensor, boundaries: torch.Tensor,
                           pred_sum: torch.Tensor, intersection: torch.Tensor,
                           rules: Sequence[str], attached_to: Optional[Sequence[Optional[int]]] = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R, K, T) intersection and kept counts of ``probs > t`` after each rule, for each candidate."""
    # float16 / bfloat16 values and cuts (already in the probabilities' dtype) are exact in float32: the same
    # comparisons as the histogram's
    probs_c = probs.detach().cpu()
    if probs_c.dtype in (torch.float16, torch.bfloat16):
        probs_c = probs_c.float()
    probs_np, target_np = probs_c.numpy(), target.cpu().numpy()
    cuts = boundaries.cpu().to(probs_c.dtype).numpy()
    batch, classes = pred_sum.shape[:2]
    sizes = pred_sum.detach().cpu().numpy()
    # a mask of 0 or 1 pixels is left as it is by every rule
    inter = intersection.detach().cpu().unsqueeze(1).repeat(1, len(rules), 1, 1)
    kept = pred_sum.detach().cpu().unsqueeze(1).repeat(1, len(rules), 1, 1)
    attached_to = list(attached_to) if attached_to is not None else [None] * classes
    if len(attached_to) != classes:
        raise ValueError(f"attached_to has {len(attached_to)} entries for {classes} classes")
    half = probs_np.dtype.type(0.5)
    claims, neighbours = None, joint_neighbours(attached_to, classes)
    for b, k in np.ndindex(batch, classes):
        p, t = probs_np[b, k], target_np[b, k]
        parent = attached_to[k] if "attached" in rules else None
        attached_near = near(probs_np[b, parent] > half) if parent is not None else None
        if "exclusive" in rules and k == 0:  # the classes that claim each pixel of image b
            claims = Claims.of(probs_np[b] > probs_np.dtype.type(CLAIM_THRESHOLD))
        claimed = claims.by_others(k, neighbours[k]) if claims is not None else None
        for j, cut in enumerate(cuts):
            if sizes[b, k, j] <= 1:
                continue
            for r, (hit, size) in enumerate(component_rule_counts(p > cut, t, rules, attached_near, claimed)):
                inter[b, r, k, j], kept[b, r, k, j] = hit, size
    device = pred_sum.device
    return inter.to(device), kept.to(device)


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
    return counts.candidates[_best_index(counts.mean_dice(smooth), counts.candidates)]


def _best_index(curve: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per row of a (K, T) Dice curve, the index of its maximum, ties to the candidate nearest 0.5."""
    is_best = np.isclose(curve, curve.max(axis=1, keepdims=True), rtol=0.0, atol=1e-12)
    return np.where(is_best, np.abs(candidates - 0.5)[None, :], np.inf).argmin(axis=1)


def best_thresholds_and_rules(counts: SweepCounts, *, smooth: float = SMOOTH,
                              min_gain: float = 0.0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Per class, the threshold and post-processing rule with the highest mean Dice on the counted images, and that
    Dice ``(K,)``. A rule is chosen only where it beats the best plain threshold by more than ``min_gain`` (and the
    rules tried before it, in ``POSTPROCESS_RULES`` order, so a tie goes to the anatomical or milder rule): a rule
    that does not raise held-out Dice is not applied (nnU-Net's choice)."""
    rows = np.arange(counts.target_sum.shape[1])
    plain = counts.mean_dice(smooth)
    index = _best_index(plain, counts.candidates)
    thresholds, dice = counts.candidates[index], plain[rows, index]
    chosen = ["none"] * len(thresholds)
    best = dice + min_gain
    for rule in sorted(counts.rules, key=_preference) if counts.has_components else ():
        curve = counts.mean_dice(smooth, rule=rule)
        index = _best_index(curve, counts.candidates)
        for k in np.flatnonzero(curve[rows, index] > best):
            thresholds[k], chosen[k], dice[k] = counts.candidates[index[k]], rule, curve[k, index[k]]
            best[k] = dice[k]
    return thresholds, chosen, dice


def _preference(rule: str) -> int:
    return POSTPROCESS_RULES.index(rule) if rule in POSTPROCESS_RULES else len(POSTPROCESS_RULES)


def save_sweep(path: Path, counts: SweepCounts) -> None:
    """``counts`` as an ``.npz`` (atomically): a fold's out-of-fold statistics, ~100 KB (a few times that with
    components)."""
    extra = {"rule_intersection": counts.rule_intersection.numpy(), "rule_pred_sum": counts.rule_pred_sum.numpy(),
             "rules": np.asarray(counts.rules, dtype=str)} if counts.has_components else {}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, candidates=counts.candidates, intersection=counts.intersection.numpy(),
                     pred_sum=counts.pred_sum.numpy(), target_sum=counts.target_sum.numpy(), **extra)


def load_sweep(path: Path) -> SweepCounts:
    """The counts ``save_sweep`` wrote (a file of an earlier version, with largest-component counts only, loads as
    the rule "largest")."""
    with np.load(path) as doc:
        counts = SweepCounts(candidates=doc["candidates"], intersection=torch.from_numpy(doc["intersection"]),
                             pred_sum=torch.from_numpy(doc["pred_sum"]),
                             target_sum=torch.from_numpy(doc["target_sum"]))
        if "rules" in doc:
            counts.rules = tuple(str(r) for r in doc["rules"])
            counts.rule_intersection = torch.from_numpy(doc["rule_intersection"])
            counts.rule_pred_sum = torch.from_numpy(doc["rule_pred_sum"])
        elif "largest_intersection" in doc:
            counts.rules = ("largest",)
            counts.rule_intersection = torch.from_numpy(doc["largest_intersection"]).unsqueeze(1)
            counts.rule_pred_sum = torch.from_numpy(doc["largest_pred_sum"]).unsqueeze(1)
        return counts
