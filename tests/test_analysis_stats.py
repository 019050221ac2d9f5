"""analysis.stats: Student-t intervals over seeds and the paired test against the reference (no Ray)."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis.stats import mean_ci, paired_test, significance_mark


def hand_ci(values):
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    return np.mean(values) - half, np.mean(values) + half


def test_mean_ci_matches_the_student_t_formula_with_n_minus_1_dof():
    values = [50.0, 52.0, 57.0]
    estimate = mean_ci(values)
    low, high = hand_ci(values)
    assert estimate.n == 3
    assert estimate.mean == pytest.approx(53.0)
    assert estimate.ci_low == pytest.approx(low)
    assert estimate.ci_high == pytest.approx(high)
    assert estimate.half_width == pytest.approx(high - 53.0)


def test_mean_ci_of_one_value_has_no_interval():
    estimate = mean_ci([61.5])
    assert (estimate.mean, estimate.ci_low, estimate.ci_high, estimate.n) == (61.5, None, None, 1)
    assert estimate.half_width is None


def test_mean_ci_skips_nan_and_counts_only_finite_values():
    estimate = mean_ci([50.0, float("nan"), 54.0])
    low, high = hand_ci([50.0, 54.0])
    assert (estimate.mean, estimate.n) == (52.0, 2)
    assert (estimate.ci_low, estimate.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_mean_ci_of_no_finite_value_is_none():
    assert mean_ci([float("nan"), float("nan")]) is None
    assert mean_ci([]) is None


def test_paired_test_matches_scipy_ttest_rel_over_common_seeds_only():
    values = {0: 60.0, 1: 62.5, 2: 59.8, 3: 70.0}
    reference = {0: 50.0, 1: 52.0, 2: 50.0, 5: 40.0}  # seeds 3 and 5 have no partner
    test = paired_test(values, reference)
    expected = stats.ttest_rel([60.0, 62.5, 59.8], [50.0, 52.0, 50.0])
    assert test.pairs == 3
    assert test.diff == pytest.approx(np.mean([10.0, 10.5, 9.8]))
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.mark == "**"


def test_paired_test_of_noisy_difference_is_not_significant():
    test = paired_test({0: 53.0, 1: 48.0, 2: 55.5}, {0: 50.0, 1: 52.0, 2: 54.0})
    assert test.p_value == pytest.approx(stats.ttest_rel([53.0, 48.0, 55.5], [50.0, 52.0, 54.0]).pvalue)
    assert test.p_value > 0.05
    assert test.mark == ""


def test_paired_test_needs_two_finite_pairs():
    assert paired_test({0: 60.0, 1: float("nan")}, {0: 50.0, 1: 50.0}) is None
    assert paired_test({0: 60.0}, {1: 50.0}) is None


def test_paired_test_of_constant_shift_is_significant_and_of_no_shift_is_not():
    assert paired_test({0: 55.0, 1: 57.0}, {0: 50.0, 1: 52.0}).p_value == 0.0
    assert paired_test({0: 50.0, 1: 52.0}, {0: 50.0, 1: 52.0}).p_value == 1.0


@pytest.mark.parametrize("p_value, mark", [(0.001, "**"), (0.0099, "**"), (0.01, "*"), (0.049, "*"), (0.05, ""),
                                           (0.5, ""), (float("nan"), "")])
def test_significance_mark_thresholds(p_value, mark):
    assert significance_mark(p_value) == mark
