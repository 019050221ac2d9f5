"""What the seeds and prompts support: intervals within a metric's range, paired tests, Holm, power.

Seeds are the unit of replication: the mini world's data is drawn from the training seed, so two cells
run with the same seed saw the same data and their difference is paired (docs/results_schema.md). Win
rates and refusal rates are also measured per prompt, and the two levels are kept apart:

- a rate's interval is a clustered bootstrap: resample seeds, then prompts within each drawn seed
  (seeded, so a report is reproducible); a percentile interval of rates stays within 0-100 by itself;
- a continuous per-cell metric (AUROC, memory, time) gets the Student-t interval over seed means,
  clipped to the metric's range and marked where it was clipped;
- below MIN_SEEDS seeds neither is shown: the per-seed values are, and no p-value is computed;
- a row is tested against its ablation's reference row on paired differences (per prompt where the
  prompts are known), clustered by seed: a t-test on the per-seed mean differences with S-1 degrees of
  freedom, the cluster count being what limits the evidence;
- Holm-Bonferroni adjusts every p-value of one report together; the minimum detectable difference
  says what a non-significant row could have shown at all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise, after Holm-Bonferroni
POWER = 0.8
MIN_SEEDS = 3  # fewer seeds: per-seed values instead of an interval, and no p-value
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# Significance marks on the corrected p-value, strictest first: the first threshold it is below wins.
MARKS = ((0.01, "**"), (0.05, "*"))

Bounds = tuple[float | None, float | None]
UNBOUNDED: Bounds = (None, None)


@dataclass(frozen=True)
class Estimate:
    """Mean over n seeds with its interval, or (below MIN_SEEDS) the per-seed values it came from.

    method: "bootstrap" (seeds, then prompts), "t" (Student-t over seed means) or "seeds" (no interval).
    clipped: the Student-t interval ran past the metric's range and was cut at its end.
    """

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int
    seed_values: tuple[float, ...] = ()
    method: str = "t"
    clipped: bool = False

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None


@dataclass(frozen=True)
class PairedTest:
    """A row against its reference over the seeds both have: mean difference, raw and Holm-adjusted p.

    level: "prompt" when the per-seed differences were averaged over paired prompts, else "seed".
    """

    diff: float
    p_value: float
    pairs: int
    level: str = "seed"
    p_adjusted: float | None = None
    sd: float = math.nan  # of the per-seed mean differences, as the test used it: what power analysis pools

    @property
    def p(self) -> float:
        """The p-value that decides: Holm-adjusted once the report's family is known, else raw."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def mark(self) -> str:
        return significance_mark(self.p)

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p < alpha


def finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def clip(value: float, bounds: Bounds) -> float:
    low, high = bounds
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


def per_seed_estimate(sample: np.ndarray) -> Estimate:
    return Estimate(float(sample.mean()), None, None, len(sample), tuple(float(v) for v in sample), "seeds")


def mean_ci(values: Iterable[float], bounds: Bounds = UNBOUNDED, confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean of the finite values with a Student-t interval (n-1 dof) cut to `bounds`; None when none is finite."""
    sample = finite(values)
    n = len(sample)
    if n == 0:
        return None
    if n < MIN_SEEDS:
        return per_seed_estimate(sample)
    mean = float(sample.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sample.std(ddof=1) / math.sqrt(n))
    low, high = clip(mean - half, bounds), clip(mean + half, bounds)
    return Estimate(mean, low, high, n, tuple(float(v) for v in sample), "t",
                    clipped=(low, high) != (mean - half, mean + half))


def _resampled_means(values: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """`draws` bootstrap means of `values`: multinomial counts over its distinct values (exact, and fast
    for verdicts that take two or three values)."""
    distinct, counts = np.unique(values, return_counts=True)
    resampled = rng.multinomial(len(values), counts / counts.sum(), size=draws)
    return resampled @ distinct / len(values)


def clustered_bootstrap(outcomes: Mapping[int, Sequence[float]], scale: float = 1.0, bounds: Bounds = UNBOUNDED, *,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean over seeds of the per-seed mean outcome (x scale), with a two-stage percentile interval.

    Each resample draws the seeds with replacement, then for every drawn seed its prompts with
    replacement; a seed drawn twice gets two independent prompt resamples.
    """
    per_seed = {s: finite(v) for s, v in sorted(outcomes.items())}
    per_seed = {s: v for s, v in per_seed.items() if len(v)}
    if not per_seed:
        return None
    seed_means = np.array([v.mean() for v in per_seed.values()]) * scale
    if len(per_seed) < MIN_SEEDS:
        return per_seed_estimate(seed_means)
    rng = np.random.default_rng(seed)
    n_seeds = len(per_seed)
    # Column j of row s: the j-th prompt resample of seed s; draw (b, k) uses column b * n_seeds + k.
    prompt_means = np.stack([_resampled_means(v, resamples * n_seeds, rng) for v in per_seed.values()])
    drawn = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    columns = np.arange(resamples * n_seeds).reshape(resamples, n_seeds)
    statistics = prompt_means[drawn, columns].mean(axis=1) * scale
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(statistics, [tail, 100 - tail])
    return Estimate(float(seed_means.mean()), clip(float(low), bounds), clip(float(high), bounds), n_seeds,
                    tuple(float(v) for v in seed_means), "bootstrap")


def _t_test(seed_diffs: np.ndarray, variance: float, level: str) -> PairedTest | None:
    """Two-sided t-test of the mean of per-seed differences with len-1 dof and the given variance."""
    diff = float(seed_diffs.mean())
    n = len(seed_diffs)
    if variance <= 0:
        # No spread at all: identical rows are no evidence of a difference, and a constant shift with no
        # noise gives t = infinity, which says nothing a reader should trust; leave it untested.
        return PairedTest(diff, 1.0, n, level, sd=0.0) if diff == 0 else None
    t = diff / math.sqrt(variance / n)
    return PairedTest(diff, float(2 * stats.t.sf(abs(t), n - 1)), n, level, sd=math.sqrt(variance))


def seed_differences(values: Mapping[int, float], reference: Mapping[int, float]) -> np.ndarray:
    """values - reference over the seeds where both are finite, in seed order."""
    seeds = sorted(s for s in values.keys() & reference.keys()
                   if math.isfinite(values[s]) and math.isfinite(reference[s]))
    return np.array([values[s] - reference[s] for s in seeds], dtype=float)


def paired_test(values: Mapping[int, float], reference: Mapping[int, float]) -> PairedTest | None:
    """Paired t-test of values - reference over the seeds where both are finite; None below MIN_SEEDS pairs."""
    diffs = seed_differences(values, reference)
    if len(diffs) < MIN_SEEDS:
        return None
    return _t_test(diffs, float(diffs.var(ddof=1)), "seed")


def prompt_differences(differences: Mapping[int, Sequence[float]], scale: float = 1.0) -> list[np.ndarray]:
    """The finite per-prompt differences (x scale) of each seed that has any, in seed order."""
    per_seed = [finite(v) * scale for _, v in sorted(differences.items())]
    return [v for v in per_seed if len(v)]


def clustered_variance(per_seed: Sequence[np.ndarray]) -> float:
    """Variance of one seed's mean difference: the spread of the seed means, never below what sampling
    the prompts alone puts into them (pooled within-seed variance / prompts per seed)."""
    seed_means = np.array([v.mean() for v in per_seed])
    between = float(seed_means.var(ddof=1)) if len(seed_means) > 1 else 0.0
    within_dof = sum(len(v) - 1 for v in per_seed)
    within = sum(float(((v - v.mean()) ** 2).sum()) for v in per_seed) / within_dof if within_dof else 0.0
    return max(between, within / float(np.mean([len(v) for v in per_seed])))


def clustered_paired_test(differences: Mapping[int, Sequence[float]], scale: float = 1.0) -> PairedTest | None:
    """Test of per-prompt paired differences (x scale), clustered by seed; None below MIN_SEEDS seeds.

    The statistic is the mean of the per-seed mean differences, its variance clustered_variance's, so
    a lucky agreement of three seeds cannot make the test exact.
    """
    per_seed = prompt_differences(differences, scale)
    if len(per_seed) < MIN_SEEDS:
        return None
    return _t_test(np.array([v.mean() for v in per_seed]), clustered_variance(per_seed), "prompt")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order (step-down, kept monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def with_holm(tests: Sequence[PairedTest]) -> list[PairedTest]:
    adjusted = holm([t.p_value for t in tests])
    return [replace(test, p_adjusted=p) for test, p in zip(tests, adjusted)]


def t_test_power(difference: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample (paired) t-test with n pairs to detect `difference` given sd."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = difference * math.sqrt(n) / sd
    # Both tails as upper tails (nct.cdf far in the left tail returns NaN): P(T < -c | d) = P(T > c | -d).
    return _upper_tail(critical, df, noncentrality) + _upper_tail(critical, df, -noncentrality)


def _upper_tail(critical: float, df: int, noncentrality: float) -> float:
    value = float(stats.nct.sf(critical, df, noncentrality))
    if math.isnan(value):  # scipy's nct gives up far from the centre, where the tail is all or nothing
        return 1.0 if noncentrality > critical else 0.0
    return value


def minimum_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Smallest true mean difference the paired t-test over n seeds detects with `power` at level `alpha`.

    sd is the standard deviation of the per-seed differences; None below MIN_SEEDS seeds or without sd.
    """
    if n < MIN_SEEDS or not math.isfinite(sd) or sd < 0:
        return None
    if sd == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        effect = optimize.brentq(lambda d: t_test_power(d, 1.0, n, alpha) - power, 1e-9, 1e4, xtol=1e-10)
    return float(effect * sd)


def seeds_needed(sd: float, target: float, alpha: float = ALPHA, power: float = POWER,
                 most: int = 1000) -> int | None:
    """Fewest seeds (>= MIN_SEEDS) whose minimum detectable difference is at most `target`; None past `most`."""
    if not math.isfinite(sd) or target <= 0:
        return None

    def enough(n: int) -> bool:
        detectable = minimum_detectable_difference(sd, n, alpha, power)
        return detectable is not None and detectable <= target

    if not enough(most):
        return None
    # The detectable difference falls as seeds are added: bisect for the first n that is enough.
    low, high = MIN_SEEDS - 1, most
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def pooled_sd(spreads: Iterable[tuple[float, int]]) -> float:
    """Pooled standard deviation of samples given as (sd, n): sqrt(sum (n-1) sd^2 / sum (n-1)).

    Samples with no spread are left out: two rows sharing every cached stage say nothing about noise.
    """
    spreads = [(sd, n) for sd, n in spreads if math.isfinite(sd) and sd > 0 and n >= 2]
    dof = sum(n - 1 for _, n in spreads)
    return math.sqrt(sum((n - 1) * sd ** 2 for sd, n in spreads) / dof) if dof else math.nan


def significance_mark(p_value: float) -> str:
    if not math.isfinite(p_value):
        return ""
    return next((mark for threshold, mark in MARKS if p_value < threshold), "")
