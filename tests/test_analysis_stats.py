"""analysis.stats: intervals within range, the clustered bootstrap, paired tests, Holm, power (no Ray)."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from analysis.stats import (
    MIN_SEEDS, PairedTest, clustered_bootstrap, clustered_paired_test, holm, mean_ci, minimum_detectable_difference,
    paired_test, pooled_sd, seeds_needed, significance_mark, t_test_power, with_holm)


def hand_ci(values):
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    return np.mean(values) - half, np.mean(values) + half


# --- Student-t intervals over seed means ---------------------------------------------------------------

def test_mean_ci_matches_the_student_t_formula_with_n_minus_1_dof():
    values = [50.0, 52.0, 57.0]
    estimate = mean_ci(values)
    low, high = hand_ci(values)
    assert (estimate.n, estimate.method, estimate.clipped) == (3, "t", False)
    assert estimate.mean == pytest.approx(53.0)
    assert (estimate.ci_low, estimate.ci_high) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize("values", [[61.5], [50.0, 54.0], [50.0, float("nan"), 54.0]])
def test_below_three_seeds_there_is_no_interval_only_the_per_seed_values(values):
    estimate = mean_ci(values)
    finite_values = [v for v in values if not math.isnan(v)]
    assert estimate.method == "seeds" and not estimate.has_interval
    assert estimate.seed_values == tuple(finite_values)
    assert estimate.mean == pytest.approx(np.mean(finite_values))


def test_mean_ci_of_no_finite_value_is_none():
    assert mean_ci([float("nan"), float("nan")]) is None
    assert mean_ci([]) is None


def test_a_t_interval_past_the_range_is_clipped_and_marked():
    values = [0.99, 0.70, 0.98]  # AUROC: the raw interval runs above 1
    raw_low, raw_high = hand_ci(values)
    estimate = mean_ci(values, bounds=(0.0, 1.0))
    assert raw_high > 1.0
    assert estimate.clipped
    assert estimate.ci_high == 1.0 and estimate.ci_low == pytest.approx(raw_low)
    assert not mean_ci([0.80, 0.81, 0.82], bounds=(0.0, 1.0)).clipped


# --- the clustered bootstrap -------------------------------------------------------------------------------

def test_bootstrap_of_constant_prompts_is_the_percentile_bootstrap_of_the_seed_means():
    # No prompt noise: the statistic is the mean of 3 seeds drawn from {40, 50, 60}. All-40 has
    # probability 1/27 = 3.7% > 2.5%, so the 2.5th percentile is 40; likewise 60 at the top.
    outcomes = {0: [0.4] * 20, 1: [0.5] * 30, 2: [0.6] * 25}
    estimate = clustered_bootstrap(outcomes, scale=100.0)
    assert estimate.mean == pytest.approx(50.0)
    assert (estimate.ci_low, estimate.ci_high) == (pytest.approx(40.0), pytest.approx(60.0))
    assert estimate.method == "bootstrap" and estimate.seed_values == pytest.approx((40.0, 50.0, 60.0))


def test_bootstrap_of_equal_seeds_has_the_binomial_width_of_the_pooled_prompts():
    # Three identical seeds of 200 fair coin flips: the seed draw changes nothing, the prompt draw gives
    # the mean of 600 flips, whose 95% interval is 50 +- 1.96 * 100 * sqrt(0.25 / 600) = 50 +- 4.0 points.
    flips = [1.0, 0.0] * 100
    estimate = clustered_bootstrap({0: flips, 1: flips, 2: flips}, scale=100.0)
    half = 1.96 * 100 * math.sqrt(0.25 / 600)
    assert estimate.mean == pytest.approx(50.0)
    assert estimate.ci_low == pytest.approx(50 - half, abs=0.4)
    assert estimate.ci_high == pytest.approx(50 + half, abs=0.4)


def test_bootstrap_is_reproducible_with_its_seed_and_moves_with_another():
    rng = np.random.default_rng(1)
    outcomes = {s: rng.integers(0, 3, 50) / 2 for s in range(4)}
    first, again = clustered_bootstrap(outcomes), clustered_bootstrap(outcomes)
    other = clustered_bootstrap(outcomes, seed=7)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_bootstrap_below_three_seeds_gives_the_per_seed_rates():
    estimate = clustered_bootstrap({3: [1.0, 0.0], 5: [1.0, 1.0]}, scale=100.0)
    assert estimate.method == "seeds" and estimate.seed_values == (50.0, 100.0)
    assert not estimate.has_interval


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.5, 0.98, 1.0])
def test_no_interval_leaves_the_metrics_range(rate):
    rng = np.random.default_rng(0)
    outcomes = {s: (rng.random(40) < rate).astype(float) for s in range(3)}
    estimate = clustered_bootstrap(outcomes, scale=100.0, bounds=(0.0, 100.0))
    assert 0.0 <= estimate.ci_low <= estimate.mean <= estimate.ci_high <= 100.0
    seed_rates = [v.mean() * 100 for v in outcomes.values()]
    t_estimate = mean_ci(seed_rates, bounds=(0.0, 100.0))
    assert 0.0 <= t_estimate.ci_low <= t_estimate.ci_high <= 100.0


# --- paired tests --------------------------------------------------------------------------------------------

def test_paired_test_matches_scipy_ttest_rel_over_common_seeds_only():
    values = {0: 60.0, 1: 62.5, 2: 59.8, 3: 70.0}
    reference = {0: 50.0, 1: 52.0, 2: 50.0, 5: 40.0}  # seeds 3 and 5 have no partner
    test = paired_test(values, reference)
    expected = stats.ttest_rel([60.0, 62.5, 59.8], [50.0, 52.0, 50.0])
    assert (test.pairs, test.level) == (3, "seed")
    assert test.diff == pytest.approx(np.mean([10.0, 10.5, 9.8]))
    assert test.p_value == pytest.approx(expected.pvalue)


def test_no_p_value_below_three_seeds():
    assert paired_test({0: 55.0, 1: 57.0}, {0: 50.0, 1: 52.0}) is None  # a constant shift over 2 seeds
    assert paired_test({0: 60.0, 1: 61.0, 2: float("nan")}, {0: 50.0, 1: 50.0, 2: 50.0}) is None
    assert clustered_paired_test({0: [1.0, 0.5, 1.0], 1: [1.0, 1.0]}) is None


def test_identical_rows_are_not_different_and_a_noiseless_shift_is_left_untested():
    assert paired_test({0: 50.0, 1: 52.0, 2: 51.0}, {0: 50.0, 1: 52.0, 2: 51.0}).p_value == 1.0
    assert paired_test({0: 55.0, 1: 57.0, 2: 56.0}, {0: 50.0, 1: 52.0, 2: 51.0}) is None


def test_clustered_test_is_the_t_test_on_per_seed_mean_differences():
    rng = np.random.default_rng(3)
    differences = {s: rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], 60) + 0.1 * s for s in range(4)}
    test = clustered_paired_test(differences, scale=100.0)
    seed_means = [100 * np.mean(v) for v in differences.values()]
    assert (test.pairs, test.level) == (4, "prompt")
    assert test.diff == pytest.approx(np.mean(seed_means))
    assert test.p_value == pytest.approx(stats.ttest_1samp(seed_means, 0.0).pvalue)


def test_clustered_test_never_trusts_seeds_more_than_their_prompts():
    # Three seeds agree exactly, but each holds 4 noisy prompts: the variance floor is the prompts'.
    differences = {s: [1.0, 0.0, 1.0, 0.0] for s in range(3)}
    test = clustered_paired_test(differences)
    within = np.var([1.0, 0.0, 1.0, 0.0], ddof=1)
    t = 0.5 / math.sqrt(within / 4 / 3)
    assert test.p_value == pytest.approx(2 * stats.t.sf(t, 2))
    assert test.p_value > 0.05


# --- Holm-Bonferroni ----------------------------------------------------------------------------------------

def test_holm_on_the_textbook_example():
    # Holm (1979) as on Wikipedia: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects H1 and H4 only.
    # Sorted: 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_caps_at_one_and_keeps_a_single_test_as_it_is():
    assert holm([0.5, 0.6, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]) == []


def test_marks_and_significance_follow_the_adjusted_p_value():
    tests = with_holm([PairedTest(5.0, 0.03, 3), PairedTest(4.0, 0.02, 3)])
    assert [t.p_adjusted for t in tests] == pytest.approx([0.04, 0.04])
    assert all(t.significant() and t.mark == "*" for t in tests)
    lone = with_holm([PairedTest(5.0, 0.03, 3), PairedTest(4.0, 0.02, 3), PairedTest(1.0, 0.9, 3)])
    assert [t.significant() for t in lone] == [False, False, False]
    assert [t.mark for t in lone] == ["", "", ""]


@pytest.mark.parametrize("p_value, mark", [(0.001, "**"), (0.0099, "**"), (0.01, "*"), (0.049, "*"), (0.05, ""),
                                           (0.5, ""), (float("nan"), "")])
def test_significance_mark_thresholds(p_value, mark):
    assert significance_mark(p_value) == mark


# --- power ---------------------------------------------------------------------------------------------------

def closed_form_power(difference, sd, n, alpha):
    """Power of the two-sided one-sample t-test by integrating over the chi-square of the sample variance:
    T = (Z + delta) / sqrt(V / df), so P(|T| > c) = E_V[Phi(delta - c s) + Phi(-delta - c s)], s = sqrt(V / df)."""
    df, delta = n - 1, difference * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)

    def integrand(v):
        s = math.sqrt(v / df)
        return (stats.norm.cdf(delta - critical * s) + stats.norm.cdf(-delta - critical * s)) * stats.chi2.pdf(v, df)

    return integrate.quad(integrand, 0, np.inf, limit=200)[0]


@pytest.mark.parametrize("n, alpha", [(3, 0.05), (5, 0.05), (10, 0.05), (5, 0.05 / 12)])
def test_minimum_detectable_difference_has_80_percent_power_by_the_closed_form(n, alpha):
    sd = 4.0
    detectable = minimum_detectable_difference(sd, n, alpha)
    assert closed_form_power(detectable, sd, n, alpha) == pytest.approx(0.8, abs=1e-4)
    assert t_test_power(detectable, sd, n, alpha) == pytest.approx(0.8, abs=1e-6)


def test_minimum_detectable_difference_matches_published_effect_sizes():
    # Cohen-style tables for the paired t-test, alpha 0.05 two-sided, power 0.8: d = 0.66 at n = 20;
    # at large n it approaches the normal formula (1.96 + 0.8416) / sqrt(n).
    assert minimum_detectable_difference(1.0, 20) == pytest.approx(0.660, abs=0.001)
    assert minimum_detectable_difference(1.0, 400) == pytest.approx((1.95996 + 0.84162) / 20, rel=0.01)
    assert minimum_detectable_difference(2.5, 20) == pytest.approx(2.5 * 0.660, abs=0.003)


def test_no_detectable_difference_below_three_seeds():
    assert minimum_detectable_difference(1.0, MIN_SEEDS - 1) is None
    assert minimum_detectable_difference(float("nan"), 5) is None


def test_seeds_needed_is_the_first_n_whose_detectable_difference_is_small_enough():
    n = seeds_needed(sd=6.0, target=5.0)
    assert minimum_detectable_difference(6.0, n) <= 5.0 < minimum_detectable_difference(6.0, n - 1)
    assert seeds_needed(sd=6.0, target=5.0, alpha=0.05 / 20) > n  # correction costs seeds
    assert seeds_needed(sd=0.5, target=5.0) == MIN_SEEDS
    assert seeds_needed(sd=100.0, target=0.01, most=50) is None


def test_pooled_sd_weights_samples_by_their_degrees_of_freedom_and_skips_zero_spread():
    first, second = [1.0, 3.0], [2.0, 4.0, 6.0]
    spreads = [(np.std(first, ddof=1), 2), (np.std(second, ddof=1), 3), (0.0, 3), (5.0, 1)]
    assert pooled_sd(spreads) == pytest.approx(math.sqrt((2.0 + 8.0) / 3))
    assert math.isnan(pooled_sd([(0.0, 3)]))


def test_a_test_carries_the_spread_it_used():
    test = paired_test({0: 60.0, 1: 62.5, 2: 59.8}, {0: 50.0, 1: 52.0, 2: 50.0})
    assert test.sd == pytest.approx(np.std([10.0, 10.5, 9.8], ddof=1))
    floored = clustered_paired_test({s: [1.0, 0.0, 1.0, 0.0] for s in range(3)})
    assert floored.sd == pytest.approx(math.sqrt(np.var([1.0, 0.0, 1.0, 0.0], ddof=1) / 4))


def test_detectable_difference_with_many_seeds_and_a_strict_corrected_level_is_finite():
    # seal-ray plan on the demo: a Bonferroni level over 112 comparisons and a bisection reaching 500 seeds;
    # scipy's noncentral t returns NaN that far out and the root search crashed. The power still crosses
    # 80% at one finite difference.
    alpha = 0.05 / 112
    detectable = minimum_detectable_difference(2.0, 500, alpha)
    assert detectable is not None and math.isfinite(detectable) and detectable > 0
    assert t_test_power(detectable, 2.0, 500, alpha) == pytest.approx(0.8, abs=1e-3)
    needed = seeds_needed(9.5, 5.0, alpha)  # one of the demo's spreads; its bisection met a NaN
    assert needed is not None and minimum_detectable_difference(9.5, needed, alpha) <= 5.0 \
        < minimum_detectable_difference(9.5, needed - 1, alpha)
