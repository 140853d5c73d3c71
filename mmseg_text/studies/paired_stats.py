"""Paired comparison of two training variants over the same seeds.

For one seed every ablation variant shares the data order, the augmentation draws and the initial
weights of everything they have in common (``models/build.py``), so the seed-to-seed noise that both
runs share cancels in their difference: the paired differences are what is compared, not two means.
Reported: their mean, a percentile-bootstrap 95 % interval of that mean (a fixed resampling seed, so
the same scores always give the same interval), and the minimum detectable effect, the smallest true
difference that n seeds with this spread would detect with 80 % power at two-sided alpha 0.05. A
"no difference" whose MDE is larger than the effect one cares about says the study was too small,
not that the variants are equal. With few seeds the percentile bootstrap is too narrow (it cannot
see beyond the n values it has: with 2 seeds of the same sign it always excludes 0), so the verdict
also asks the paired t interval to exclude 0; read both together with the MDE.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedComparison:
    seeds: tuple[int, ...]  # the seeds finished for both variants, in order
    differences: tuple[float, ...]  # variant - reference, per seed
    mean_diff: float
    sd_diff: float  # sample SD (n - 1) of the differences; nan below 2 seeds
    ci_low: float  # percentile bootstrap interval of mean_diff; nan below 2 seeds
    ci_high: float
    mde: float  # minimum detectable effect (80 % power, two-sided alpha 0.05); nan below 2 seeds
    t_low: float  # paired t interval (95 %) of mean_diff; nan below 2 seeds
    t_high: float
    verdict: str  # "better" | "worse" | "no difference" | "too few seeds"

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: lists, and None for an undefined number (NaN is not JSON)."""
        plain = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}
        return {**plain, "n": self.n, "seeds": list(self.seeds), "differences": list(self.differences)}


def paired_differences(scores: Mapping[int, float], reference: Mapping[int, float]) -> tuple[list[int], list[float]]:
    """Seeds scored in both (sorted) and ``scores - reference`` for each; a seed missing from either is left out."""
    seeds = sorted(set(scores) & set(reference))
    return seeds, [float(scores[s]) - float(reference[s]) for s in seeds]


def bootstrap_ci(differences: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference: resample the seeds with replacement."""
    diffs = np.asarray(differences, dtype=np.float64)
    if diffs.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n): the paired t-test's detectable mean difference."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n))


def t_interval(mean: float, sd: float, n: int, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The paired t-test's interval of the mean difference (nan below 2 seeds; zero width when sd is 0)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan, math.nan
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * sd / math.sqrt(n))
    return mean - half, mean + half


def verdict(ci_low: float, ci_high: float, t_low: Optional[float] = None, t_high: Optional[float] = None) -> str:
    """"better"/"worse" when the bootstrap interval, and the t interval when given, both lie on that side of 0,
    else "no difference"; no interval, no verdict."""
    t_low = ci_low if t_low is None else t_low
    t_high = ci_high if t_high is None else t_high
    if not all(math.isfinite(v) for v in (ci_low, ci_high, t_low, t_high)):
        return "too few seeds"
    if ci_low > 0 and t_low > 0:
        return "better"
    if ci_high < 0 and t_high < 0:
        return "worse"
    return "no difference"


def compare_paired(scores: Mapping[int, float], reference: Mapping[int, float], *,
                   resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PairedComparison:
    """``scores`` against ``reference`` (both seed -> score), paired by seed."""
    seeds, diffs = paired_differences(scores, reference)
    n = len(diffs)
    mean = float(np.mean(diffs)) if n else math.nan
    sd = float(np.std(diffs, ddof=1)) if n > 1 else math.nan
    low, high = bootstrap_ci(diffs, resamples=resamples, seed=seed)
    t_low, t_high = t_interval(mean, sd, n)
    return PairedComparison(seeds=tuple(seeds), differences=tuple(diffs), mean_diff=mean, sd_diff=sd,
                            ci_low=low, ci_high=high, mde=minimum_detectable_effect(sd, n), t_low=t_low, t_high=t_high,
                            verdict=verdict(low, high, t_low, t_high))
