"""Seed statistics: a mean with its Student-t confidence interval, and a paired t-test against a reference.

Seeds are the unit of replication: the mini world's data is drawn from the training seed, so two cells
run with the same seed saw the same data and their difference is paired (docs/results_schema.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# Significance marks, strictest first: the first threshold the p-value is below wins.
MARKS = ((0.01, "**"), (0.05, "*"))


@dataclass(frozen=True)
class Estimate:
    """Mean over n seeds with its confidence interval; the interval is None when n < 2."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None else self.ci_high - self.mean


@dataclass(frozen=True)
class PairedTest:
    """A cell against the reference cell over the seeds both have: mean difference and two-sided p-value."""

    diff: float
    p_value: float
    pairs: int

    @property
    def mark(self) -> str:
        return significance_mark(self.p_value)


def finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> Estimate | None:
    """Mean of the finite values with a Student-t interval (n-1 degrees of freedom); None when none is finite."""
    sample = finite(values)
    n = len(sample)
    if n == 0:
        return None
    mean = float(sample.mean())
    if n == 1:
        return Estimate(mean, None, None, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sample.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n)


def paired_test(values: Mapping[int, float], reference: Mapping[int, float]) -> PairedTest | None:
    """Paired t-test of values - reference over the seeds where both are finite; None below 2 pairs."""
    seeds = sorted(s for s in values.keys() & reference.keys()
                   if math.isfinite(values[s]) and math.isfinite(reference[s]))
    if len(seeds) < 2:
        return None
    diffs = np.array([values[s] - reference[s] for s in seeds], dtype=float)
    if np.all(diffs == diffs[0]):
        # Zero spread: t is +-infinity (p -> 0) for a constant shift, undefined for no shift at all (two
        # cells sharing every cached stage); scipy returns NaN with a precision warning for both.
        return PairedTest(float(diffs[0]), 0.0 if diffs[0] != 0 else 1.0, len(seeds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_1samp(diffs, 0.0)
    return PairedTest(float(diffs.mean()), float(result.pvalue), len(seeds))


def significance_mark(p_value: float) -> str:
    if not math.isfinite(p_value):
        return ""
    return next((mark for threshold, mark in MARKS if p_value < threshold), "")
