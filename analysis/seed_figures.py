"""The study's seed-level figures: Student-t intervals over per-seed values of SEAL's reference cell.

The report's tables resample prompts within seeds (analysis/stats.py); these figures use the per-seed
values alone, the coarse intervals anyone can recompute from the results DataFrame, and they are what
the demo is sized for (sweeps/demo.yaml, docs/calibration.md):
- SEAL - Standard SFT in HEx-PHI refusal rate, paired by seed (only seeds where both are done);
- SEAL's win rate against Standard SFT on hh, orca and hexphi.
Below MIN_SEEDS seeds no interval is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.ablations import METHOD
from analysis.stats import CONFIDENCE, MIN_SEEDS, mean_ci

REFUSAL = "safety/refusal_rate"
WIN_RATES = (("hh", "HH"), ("orca", "SlimOrca"), ("hexphi", "HEx-PHI"))
PAIRED_TARGET = 10.0  # points
WIN_RATE_TARGET = 5.0  # points


@dataclass(frozen=True)
class SeedFigure:
    name: str
    seeds: int
    mean: float
    half_width: float | None  # None below MIN_SEEDS seeds
    target: float

    @property
    def met(self) -> bool | None:
        return None if self.half_width is None else self.half_width <= self.target


def half_width(values: np.ndarray) -> float | None:
    """Half-width of stats.mean_ci's Student-t interval (unbounded); None below MIN_SEEDS values."""
    estimate = mean_ci(values)
    return None if estimate is None or estimate.ci_low is None else (estimate.ci_high - estimate.ci_low) / 2


def _per_seed(frame: pd.DataFrame, method: str, label: str, column: str) -> pd.Series:
    if column not in frame.columns or METHOD not in frame.columns:
        return pd.Series(dtype=float)
    rows = frame[(frame["status"] == "done") & (frame[METHOD] == method) & (frame["label"] == label)]
    values = pd.to_numeric(rows[column], errors="coerce")
    return values.groupby(rows["seed"]).mean().dropna()


def _figure(name: str, values: pd.Series, target: float) -> SeedFigure:
    sample = values.to_numpy(dtype=float)
    return SeedFigure(name, len(sample), float(sample.mean()) if len(sample) else float("nan"), half_width(sample), target)


def seed_figures(frame: pd.DataFrame) -> list[SeedFigure]:
    """The figures, from the done rows of SEAL's reference cell (label 'reference') and Standard SFT
    (label 'method=sft'); empty when the frame has no SEAL reference cell."""
    seal_refusal = _per_seed(frame, "seal", "reference", REFUSAL)
    if seal_refusal.empty:
        return []
    sft_refusal = _per_seed(frame, "sft", "method=sft", REFUSAL)
    paired = (seal_refusal - sft_refusal).dropna() * 100
    figures = [_figure("SEAL - Standard SFT, HEx-PHI refusal (points, paired by seed)", paired, PAIRED_TARGET)]
    for key, name in WIN_RATES:
        figures.append(_figure(f"SEAL's {name} win rate (%)", _per_seed(frame, "seal", "reference", f"winrate/{key}"),
                               WIN_RATE_TARGET))
    return figures


def render_markdown(figures: list[SeedFigure]) -> list[str]:
    if not figures:
        return []
    lines = ["## Seed-level figures", "",
             f"Student-t {CONFIDENCE:.0%} intervals over per-seed values of SEAL's reference cell (the tables' "
             "intervals also resample prompts). The targets are what the demo is sized for.", "",
             "| figure | seeds | mean | half-width | target | |", "|---|---|---|---|---|---|"]
    for f in figures:
        width = "-" if f.half_width is None else f"{f.half_width:.1f}"
        verdict = {True: "met", False: "not met", None: f"needs {MIN_SEEDS} seeds"}[f.met]
        mean = "-" if math.isnan(f.mean) else f"{f.mean:.1f}"
        lines.append(f"| {f.name} | {f.seeds} | {mean} | {width} | <= {f.target:g} | {verdict} |")
    return [*lines, ""]
