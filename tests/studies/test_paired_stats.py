"""Paired statistics of the ablation: hand-computed differences, SD, MDE; a deterministic bootstrap interval."""
import math

import pytest

from mmseg_text.studies.paired_stats import (bootstrap_ci, compare_paired, minimum_detectable_effect,
                                            paired_differences, verdict)


def test_differences_mean_sd_and_mde_by_hand():
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01; t(0.975, 2) = 4.3027, t(0.8, 2) = 1.0607
    result = compare_paired({0: 0.81, 1: 0.72, 2: 0.93}, {0: 0.80, 1: 0.70, 2: 0.90})
    assert result.seeds == (0, 1, 2) and result.n == 3
    assert result.differences == pytest.approx((0.01, 0.02, 0.03))
    assert result.mean_diff == pytest.approx(0.02)
    assert result.sd_diff == pytest.approx(0.01)
    assert result.mde == pytest.approx((4.302653 + 1.060660) * 0.01 / math.sqrt(3), rel=1e-5)
    assert result.mde == pytest.approx(0.0310, abs=5e-5)


def test_t_quantiles_behind_the_mde():
    assert minimum_detectable_effect(1.0, 2) == pytest.approx((12.706205 + 1.376382) / math.sqrt(2), rel=1e-5)  # df 1
    assert minimum_detectable_effect(2.0, 31) == pytest.approx((2.042272 + 0.853767) * 2 / math.sqrt(31), rel=1e-5)
    assert math.isnan(minimum_detectable_effect(0.01, 1))


def test_bootstrap_interval_holds_the_mean_and_is_deterministic():
    diffs = [0.01, 0.02, 0.03, -0.005, 0.04]
    low, high = bootstrap_ci(diffs)
    assert low < sum(diffs) / len(diffs) < high
    assert min(diffs) <= low and high <= max(diffs)  # means of resamples never leave the data's range
    assert bootstrap_ci(diffs) == (low, high)  # fixed resampling seed: same scores, same interval
    assert bootstrap_ci(diffs, seed=1) != (low, high)
    # three positive differences: every resample mean lies in [0.01, 0.03], so 0 is outside the interval
    low3, high3 = bootstrap_ci([0.01, 0.02, 0.03])
    assert 0.01 <= low3 < 0.02 < high3 <= 0.03


def test_pairs_only_seeds_finished_for_both():
    seeds, diffs = paired_differences({0: 0.5, 1: 0.6, 3: 0.9}, {1: 0.5, 0: 0.4, 2: 0.1})
    assert seeds == [0, 1] and diffs == pytest.approx([0.1, 0.1])
    one = compare_paired({0: 0.5, 5: 0.7}, {0: 0.4})
    assert one.n == 1 and one.mean_diff == pytest.approx(0.1)
    assert math.isnan(one.ci_low) and math.isnan(one.mde) and one.verdict == "too few seeds"
    plain = one.to_dict()
    assert plain["ci_low"] is None and plain["mde"] is None and plain["seeds"] == [0] and plain["n"] == 1


def test_verdict_from_the_interval():
    assert verdict(-0.01, 0.02) == "no difference"
    assert verdict(0.0, 0.02) == "no difference"
    assert verdict(0.001, 0.02) == "better"
    assert verdict(-0.03, -0.001) == "worse"
    assert verdict(math.nan, math.nan) == "too few seeds"
    # 0.01, 0.02, 0.03: the bootstrap interval excludes 0 but the t interval (0.02 ± 0.0248) does not
    assert compare_paired({0: 0.81, 1: 0.72, 2: 0.93}, {0: 0.80, 1: 0.70, 2: 0.90}).verdict == "no difference"
    assert compare_paired({0: 0.85, 1: 0.76, 2: 0.95}, {0: 0.80, 1: 0.70, 2: 0.90}).verdict == "better"
    two = compare_paired({0: 0.60, 1: 0.52}, {0: 0.58, 1: 0.49})  # two seeds of one sign: bootstrap alone says better
    assert two.ci_low > 0 and two.t_low < 0 and two.verdict == "no difference"
    assert verdict(0.001, 0.02, -0.01, 0.03) == "no difference" and verdict(0.001, 0.02, 0.0005, 0.03) == "better"
    assert compare_paired({0: 0.79, 1: 0.72, 2: 0.90}, {0: 0.80, 1: 0.70, 2: 0.90}).verdict == "no difference"
