"""Does 0.5 mean 0.5? Per-class reliability of sigmoid probabilities: expected calibration error from binned counts.

Per image, class and probability bin three numbers are kept (pixels, their summed probability, how many of them
are foreground), so batches and ranks concatenate exactly, as the threshold sweep's counts do, and no probability
map is held. For class k over all counted pixels, ECE_k = sum_b (n_kb / n_k) * |mean probability_kb - foreground
rate_kb| (Guo et al. 2017, equal-width bins). Background pixels dominate a radiograph, so ECE over all pixels is small
for any model that is sure of the background; ``foreground_ece`` leaves out the first bin (p < 1/bins) to show how
honest the probabilities are where the model says "maybe".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from mmseg_text.metrics import ArrayLike, _as_tensor, _check_pair

DEFAULT_BINS = 10


@dataclass
class CalibrationCounts:
    """(N, K, B) per image, class and equal-width probability bin: pixels, summed probability, foreground pixels."""

    pixels: torch.Tensor  # int64
    prob_sum: torch.Tensor  # float64
    hits: torch.Tensor  # int64

    @property
    def bins(self) -> int:
        return int(self.pixels.shape[-1])

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @staticmethod
    def concat(parts: Sequence["CalibrationCounts"]) -> "CalibrationCounts":
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        return CalibrationCounts(*(torch.cat([getattr(p, f).cpu() for p in parts])
                                   for f in ("pixels", "prob_sum", "hits")))

    def reliability(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class and bin, over all images: mean probability, foreground rate and pixel count, ``(K, B)`` each
        (NaN where a bin is empty)."""
        n = self.pixels.sum(0).double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = self.prob_sum.sum(0).numpy() / n
            frequency = self.hits.sum(0).double().numpy() / n
        return confidence, frequency, n

    def ece(self, skip_first_bin: bool = False) -> np.ndarray:
        """Expected calibration error per class ``(K,)``; ``skip_first_bin``: over pixels with p >= 1 / bins."""
        confidence, frequency, n = self.reliability()
        if skip_first_bin:
            confidence, frequency, n = confidence[:, 1:], frequency[:, 1:], n[:, 1:]
        total = n.sum(1, keepdims=True)
        gap = np.where(n > 0, np.abs(np.nan_to_num(confidence) - np.nan_to_num(frequency)), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total[:, 0] > 0, (n / np.maximum(total, 1) * gap).sum(1), np.nan)

    def foreground_ece(self) -> np.ndarray:
        return self.ece(skip_first_bin=True)

    def summary(self, names: Sequence[str]) -> dict:
        """JSON-ready: ECE per class (all pixels and p >= 1/bins), their means, and the pooled reliability curve."""
        confidence, frequency, n = self.reliability()
        pooled_n = n.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled_conf = np.nansum(confidence * n, 0) / pooled_n
            pooled_freq = np.nansum(frequency * n, 0) / pooled_n
        ece, fg = self.ece(), self.foreground_ece()

        def clean(values) -> list:
            return [None if not np.isfinite(v) else float(v) for v in values]

        def mean(values) -> float | None:  # None when no class has pixels there
            finite = values[np.isfinite(values)]
            return float(finite.mean()) if finite.size else None

        return {"bins": self.bins, "ece": dict(zip(names, clean(ece))), "foreground_ece": dict(zip(names, clean(fg))),
                "mean_ece": mean(ece), "mean_foreground_ece": mean(fg),
                "reliability": {"confidence": clean(pooled_conf), "frequency": clean(pooled_freq),
                                "pixels": [int(v) for v in pooled_n]}}


def calibration_counts(probs: ArrayLike, target: ArrayLike, bins: int = DEFAULT_BINS) -> CalibrationCounts:
    """Binned counts of ``probs`` ``(B, K, H, W)`` against binary ``target`` (> 0.5), one pass, on ``probs``' device."""
    probs_t, target_t = _as_tensor(probs), _as_tensor(target)
    _check_pair(probs_t, target_t)
    if not probs_t.is_floating_point():
        raise TypeError(f"probabilities must be floating point, got {probs_t.dtype}")
    batch, classes = probs_t.shape[:2]
    flat = probs_t.reshape(batch * classes, -1).float()
    hit = (target_t if target_t.dtype == torch.bool else target_t > 0.5).reshape(batch * classes, -1)
    index = (flat * bins).long().clamp_(0, bins - 1)  # p = 1 falls in the last bin
    index += torch.arange(batch * classes, device=flat.device).unsqueeze(1) * bins
    size = batch * classes * bins
    pixels = torch.bincount(index.reshape(-1), minlength=size)
    prob_sum = torch.bincount(index.reshape(-1), weights=flat.reshape(-1).double(), minlength=size)
    hits = torch.bincount(index[hit], minlength=size)
    shape = (batch, classes, bins)
    return CalibrationCounts(pixels.view(shape), prob_sum.view(shape), hits.view(shape))


def reliability_chart(summary: dict, path: Path, title: str) -> Path:
    """The pooled reliability curve (all classes' pixels), with the pixel share per bin on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmseg_text.io import atomic_save_figure

    rel = summary["reliability"]
    bins = summary["bins"]
    centres = (np.arange(bins) + 0.5) / bins
    conf = np.array([np.nan if v is None else v for v in rel["confidence"]])
    freq = np.array([np.nan if v is None else v for v in rel["frequency"]])
    fig, (ax, share) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
    fg = summary["mean_foreground_ece"]
    ax.plot(conf, freq, marker="o", label=f"model (mean ECE {summary['mean_ece']:.4f}"
                                         + (f"; p >= {1 / bins:.1f}: {fg:.3f})" if fg is not None else ")"))
    ax.set_xlabel("mean predicted probability in bin")
    ax.set_ylabel("foreground rate in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    share.bar(centres, np.maximum(np.array(rel["pixels"], dtype=float), 1), width=1 / bins * 0.9)
    share.set_yscale("log")
    share.set_xlabel("predicted probability")
    share.set_ylabel("pixels")
    share.set_title("pixels per bin")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=100)
    return path


# ---- temperature scaling (Guo et al. 2017), one temperature per class, fitted on validation by NLL
TEMPERATURES = np.geomspace(0.25, 4.0, 13)  # 0.25 ... 4, ratio 4^(1/6) ~ 1.26; index 6 is T = 1
_P_CLIP = 1e-6  # probabilities are clipped before their logit is taken: |logit| <= 13.8


def scaled_probabilities(probs: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """sigmoid(logit(p) / T): ``probs`` (B, K, H, W) with a scalar T or one per class (K,)."""
    t = torch.as_tensor(temperature, dtype=torch.float32, device=probs.device)
    if t.ndim == 1:
        t = t.view(1, -1, 1, 1)
    p = probs.float().clamp(_P_CLIP, 1 - _P_CLIP)
    return torch.sigmoid(torch.logit(p) / t)


@dataclass
class TemperatureCounts:
    """Per image, class and candidate temperature: the summed binary cross-entropy ``nll`` (N, K, G) and the
    binned calibration counts of the scaled probabilities (N, K, G, B); sums, so batches and ranks concatenate."""

    temperatures: np.ndarray  # (G,)
    nll: torch.Tensor  # float64
    pixels: torch.Tensor  # int64
    prob_sum: torch.Tensor  # float64
    hits: torch.Tensor  # int64

    @staticmethod
    def concat(parts: Sequence["TemperatureCounts"]) -> "TemperatureCounts":
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        return TemperatureCounts(parts[0].temperatures, *(torch.cat([getattr(p, f).cpu() for p in parts])
                                                          for f in ("nll", "pixels", "prob_sum", "hits")))

    def __len__(self) -> int:
        return int(self.nll.shape[0])

    def fitted_index(self, images: Optional[np.ndarray] = None) -> np.ndarray:
        """(K,) index of the temperature with the lowest NLL over ``images`` (default all), ties to T nearest 1."""
        nll = self.nll if images is None else self.nll[torch.as_tensor(images)]
        total = nll.sum(0).numpy()  # (K, G)
        best = np.isclose(total, total.min(1, keepdims=True), rtol=1e-12, atol=0)
        return np.where(best, np.abs(np.log(self.temperatures))[None, :], np.inf).argmin(1)

    def fitted(self) -> np.ndarray:
        return self.temperatures[self.fitted_index()]

    def _ece(self, index: np.ndarray, images: np.ndarray, skip_first_bin: bool = False) -> np.ndarray:
        """(K,) ECE over ``images`` of each class's probabilities scaled by its temperature ``index``."""
        k = np.arange(len(index))
        select = torch.as_tensor(images)
        pick = (lambda t: t[select][:, k, index])  # (n, K, B)
        return CalibrationCounts(pick(self.pixels), pick(self.prob_sum), pick(self.hits)).ece(skip_first_bin)

    def summary(self, names: Sequence[str]) -> dict:
        """Fitted T per class, ECE at T = 1 and at the fitted T, and (the honest figure) the ECE of a 2-fold
        cross-fit: T fitted on even images and scored on odd ones and back, pooled; each over all pixels and over
        the pixels with p >= 1 / bins (``foreground_*``, where "maybe" is said)."""
        images = np.arange(len(self))
        one = np.full(len(names), int(np.argmin(np.abs(np.log(self.temperatures)))))
        fitted = self.fitted_index()
        halves = [images[images % 2 == 0], images[images % 2 == 1]]

        def mean(values) -> float | None:
            finite = values[np.isfinite(values)]
            return float(finite.mean()) if finite.size else None

        out: dict = {"temperatures": dict(zip(names, map(float, self.temperatures[fitted]))), "images": len(self)}
        for prefix, skip in (("", False), ("foreground_", True)):
            if all(len(h) for h in halves):
                cross = [self._ece(self.fitted_index(halves[1 - i]), halves[i], skip) for i in range(2)]
                weights = [len(h) for h in halves]
                cross_fit = np.nansum([c * w for c, w in zip(cross, weights)], 0) / sum(weights)
            else:
                cross_fit = np.full(len(names), np.nan)
            out.update({f"mean_{prefix}ece_t1": mean(self._ece(one, images, skip)),
                        f"mean_{prefix}ece_fitted": mean(self._ece(fitted, images, skip)),
                        f"mean_{prefix}ece_cross_fitted": mean(cross_fit)})
        return out


def temperature_counts(probs: ArrayLike, target: ArrayLike, temperatures: Sequence[float] = TEMPERATURES,
                       bins: int = DEFAULT_BINS) -> TemperatureCounts:
    """NLL and calibration counts of ``probs`` (B, K, H, W) rescaled by every candidate temperature."""
    probs_t, target_t = _as_tensor(probs), _as_tensor(target)
    _check_pair(probs_t, target_t)
    hit = target_t if target_t.dtype == torch.bool else target_t > 0.5
    temps = np.asarray(temperatures, dtype=np.float64)
    nll, parts = [], []
    for t in temps:
        p = scaled_probabilities(probs_t, float(t))
        bce = torch.nn.functional.binary_cross_entropy(p, hit.float(), reduction="none")
        nll.append(bce.double().flatten(2).sum(-1))  # (B, K)
        parts.append(calibration_counts(p, hit, bins))
    return TemperatureCounts(temps, torch.stack(nll, 2),
                             *(torch.stack([getattr(c, f) for c in parts], 2) for f in ("pixels", "prob_sum", "hits")))
