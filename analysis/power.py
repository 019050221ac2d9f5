"""Power from earlier results: how noisy each study's differences are, and the seeds a target needs.

For every compared column of every study, the per-seed differences of each row against its reference
(per prompt where the prompts are known, with the same variance floor as the test) are pooled into one
standard deviation. Two seeds already give one degree of freedom per row, so a pilot too small for any
p-value still sizes the real run (`seal-ray plan`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.ablations import DEFAULT_ABLATIONS, Ablation, ablation_reference, ablation_rows
from analysis.stats import (
    ALPHA, clustered_variance, minimum_detectable_difference, pooled_sd, prompt_differences, seed_differences,
    seeds_needed)
from analysis.tables import (
    Metric, cell_groups, default_metrics, header, outcome_values, paired_prompts, seed_values)


@dataclass(frozen=True)
class ColumnNoise:
    """The pooled spread of one study's per-seed differences in one column (display units)."""

    study: str
    column: str
    header: str
    unit: str
    sd: float
    rows: int  # non-reference rows that contributed (>= 2 paired seeds each)
    seeds: int  # the most seeds any of them had

    def detectable(self, seeds: int, comparisons: int) -> float | None:
        return minimum_detectable_difference(self.sd, seeds, ALPHA / max(comparisons, 1))

    def seeds_for(self, target: float, comparisons: int) -> int | None:
        return seeds_needed(self.sd, target, ALPHA / max(comparisons, 1))


def _spread(group, reference, metric: Metric, prompts: pd.DataFrame | None) -> tuple[float, int] | None:
    outcomes, reference_outcomes = outcome_values(prompts, group, metric), outcome_values(prompts, reference, metric)
    if outcomes is not None and reference_outcomes is not None:
        per_seed = prompt_differences(paired_prompts(outcomes, reference_outcomes), metric.outcome.scale)
        variance = clustered_variance(per_seed) if len(per_seed) >= 2 else math.nan
        return math.sqrt(variance), len(per_seed)
    diffs = seed_differences(seed_values(group, metric), seed_values(reference, metric))
    return (float(diffs.std(ddof=1)), len(diffs)) if len(diffs) >= 2 else None


def study_noise(frame: pd.DataFrame, prompts: pd.DataFrame | None = None,
                ablations: Sequence[Ablation] = DEFAULT_ABLATIONS, *, reference: Mapping[str, Any] | None = None,
                swept: Sequence[str] | None = None) -> tuple[list[ColumnNoise], int]:
    """(the noise of every study x column with a usable estimate, the comparisons a report would make)."""
    noise, comparisons = [], 0
    for ablation in ablations:
        rows = ablation_rows(frame, ablation, reference=reference, swept=swept)
        groups = cell_groups(rows, ablation, ablation_reference(ablation, reference))
        base = next((g for g in groups if g.is_reference), None)
        if base is None:
            continue
        others = [g for g in groups if g is not base]
        for metric in default_metrics(rows):
            spreads = [spread for g in others if (spread := _spread(g, base, metric, prompts)) is not None]
            comparisons += len(others)
            sd = pooled_sd(spreads)
            if math.isfinite(sd):
                noise.append(ColumnNoise(ablation.name, metric.column, header(metric), metric.unit, sd,
                                         len(spreads), max(n for _, n in spreads)))
    return noise, comparisons
