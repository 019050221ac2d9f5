"""PNG figures from the table models: ablation bars, Alg 1 vs Alg 2 resources, selector-weight histograms.

Figures are built on `matplotlib.figure.Figure` (Agg canvas) rather than pyplot, so plotting never
touches a global backend or leaves figures open in a long-running driver.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.paper import NEUTRAL, TEST_SETS
from analysis.render import REFERENCE_SUFFIX
from analysis.selector_weights import LABELS
from analysis.table_model import Cell, Table

DPI = 120
TEST_SET_NAMES = {f"winrate/{key}": name for key, name in TEST_SETS}
SAFETY = "safety/refusal_rate"
LABEL_COLOURS = {"clean": "tab:green", "unsafe": "tab:red", "low_quality": "tab:orange"}


def _tick_label(table: Table, index: int) -> str:
    row = table.rows[index]
    # Wrapped, so that long labels ("Oracle (clean data)") do not run into their neighbours.
    return textwrap.fill(row.label, 14) + ("\n" + REFERENCE_SUFFIX.strip() if row.is_reference else "")


def _error_bars(cells: Sequence[Cell]) -> np.ndarray:
    """(2, n) distances below and above each mean: the table's interval, NaN where it shows none."""
    below, above = [], []
    for cell in cells:
        estimate = cell.estimate
        has = estimate is not None and estimate.has_interval
        below.append(estimate.mean - estimate.ci_low if has else np.nan)
        above.append(estimate.ci_high - estimate.mean if has else np.nan)
    return np.array([below, above])


def grouped_bars(ax: Axes, groups: Sequence[str], series: Sequence[tuple[str, Sequence[Cell]]]) -> None:
    """One cluster per group, one bar per series; the tables' intervals as error bars (per-seed dots where a
    cell has too few seeds for one), marks above, gaps labelled."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(groups))
    for index, (name, cells) in enumerate(series):
        x = positions - 0.4 + width * (index + 0.5)
        means = np.array([c.estimate.mean if c.estimate else np.nan for c in cells])
        errors = _error_bars(cells)
        ax.bar(x, np.nan_to_num(means), width, yerr=errors, capsize=3, label=name, error_kw={"elinewidth": 1})
        for xi, mean, top, cell in zip(x, means, errors[1], cells):
            if cell.estimate is None:
                # A failed or missing cell gets its state written where its bar would be, never a silent gap.
                ax.text(xi, 0, " " + cell.text.split(" (")[0], rotation=90, ha="center", va="bottom", fontsize=8,
                        color="dimgray")
                continue
            if not cell.estimate.has_interval and cell.estimate.seed_values:
                seeds = cell.estimate.seed_values
                ax.plot([xi] * len(seeds), seeds, "o", color="black", markersize=3, zorder=3)
            if cell.mark:
                height = max([mean + np.nan_to_num(top), *cell.estimate.seed_values])
                ax.text(xi, height, cell.mark, ha="center", va="bottom", fontsize=9)
    ax.set_xticks(positions, groups, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _top(cells: Sequence[Cell]) -> float:
    tops = [max(c.estimate.ci_high if c.estimate.has_interval else c.estimate.mean, *c.estimate.seed_values)
            for c in cells if c.estimate]
    return max(tops, default=0.0)


INTERVALS = "mean with 95% interval, dots: per-seed values below 3 seeds"
MARKS_NOTE = "* p<0.05, ** p<0.01 vs reference, Holm-adjusted"


def plot_ablation(table: Table, path: str | Path) -> Path:
    """Win rates per test set (left) and the refusal rate on HEx-PHI (right), mean ± 95% CI over seeds."""
    groups = [_tick_label(table, i) for i in range(len(table.rows))]
    win_columns = [c for c in table.columns if c.key in TEST_SET_NAMES]
    figure = Figure(figsize=(max(8.0, 2.2 * len(groups) + 3.0), 4.6), layout="constrained")
    win_ax, safety_ax = figure.subplots(1, 2, width_ratios=[3, 1.4])
    win_series = [(TEST_SET_NAMES[c.key], [row.cells[c.key] for row in table.rows]) for c in win_columns]
    grouped_bars(win_ax, groups, win_series)
    win_ax.axhline(NEUTRAL, color="black", linestyle="--", linewidth=1, label="Standard SFT (50)")
    all_cells = [cell for _, cells in win_series for cell in cells]
    win_ax.set_ylim(0, min(105.0, max(_top(all_cells), NEUTRAL) + 10))
    win_ax.set_ylabel("win rate vs Standard SFT (%)")
    win_ax.set_title("Win rate by test set")
    # Below the figure, laid out by constrained layout: inside the axes it would cover bars in any corner.
    figure.legend(*win_ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    if any(c.key == SAFETY for c in table.columns):
        safety_cells = [row.cells[SAFETY] for row in table.rows]
        grouped_bars(safety_ax, groups, [("refusal", safety_cells)])
        safety_ax.set_ylim(0, 105)
    safety_ax.set_ylabel("refusal rate on HEx-PHI (%)")
    safety_ax.set_title("Safety")
    figure.suptitle(f"{table.title} ({INTERVALS}; {MARKS_NOTE})", fontsize=10)
    return _save(figure, path)


def plot_resources(memory: Table, time: Table, path: str | Path) -> Path:
    """Per-stage peak memory (left) and wall time (right), one bar per row (Alg 1 vs Alg 2)."""
    figure = Figure(figsize=(11.0, 4.4), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, table, ylabel in ((axes[0], memory, "peak memory (MB)"), (axes[1], time, "wall time (s)")):
        stage_columns = [c for c in table.columns if c.kind == "estimate"]
        series = [(row.label, [row.cells[c.key] for c in stage_columns]) for row in table.rows]
        grouped_bars(ax, [c.header for c in stage_columns], series)
        ax.set_xlabel("pipeline stage")
        ax.set_ylabel(ylabel)
        ax.set_title(table.caption or table.title, fontsize=10)
        if series:
            ax.legend(fontsize=8)
    figure.suptitle(f"{memory.title.split(': ', 1)[-1]}: resources per stage ({INTERVALS})", fontsize=11)
    return _save(figure, path)


def plot_categories(table: Table, path: str | Path) -> Path:
    """Refusal per harm category (x), one bar per row of the table (a method), with the table's intervals."""
    columns = [c for c in table.columns if c.kind == "estimate"]
    figure = Figure(figsize=(max(9.0, 1.1 * len(columns) * max(len(table.rows), 1) ** 0.5 + 3), 4.8),
                    layout="constrained")
    ax = figure.subplots()
    series = [(row.label, [row.cells[c.key] for c in columns]) for row in table.rows]
    grouped_bars(ax, [textwrap.fill(c.header, 12) for c in columns], series)
    ax.set_ylim(0, 105)
    ax.set_ylabel("refusal rate (%)")
    ax.set_xlabel("HEx-PHI harm category")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(series), 5) or 1,
                  fontsize=8, frameon=False)
    figure.suptitle(f"{table.title} ({INTERVALS})", fontsize=11)
    return _save(figure, path)


def plot_weight_histogram(weights: np.ndarray, labels: Sequence[str] | np.ndarray, path: str | Path, *,
                          title: str = "Selector weights by ground-truth label", bins: int = 40) -> Path:
    """Histogram of p(omega) per label (clean / unsafe / low_quality): a good selector separates them."""
    weights = np.asarray(weights, dtype=float)
    labels = np.asarray(labels, dtype=object)
    if weights.shape != labels.shape:
        raise ValueError(f"{len(weights)} weights but {len(labels)} labels; they must be indexed alike")
    present = [label for label in LABELS if np.any(labels == label)]
    present += sorted({str(label) for label in labels} - set(LABELS))
    edges = np.histogram_bin_edges(weights[np.isfinite(weights)], bins=bins)
    figure = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = figure.subplots()
    for label in present:
        values = weights[labels == label]
        colour = LABEL_COLOURS.get(label)
        ax.hist(values, bins=edges, histtype="stepfilled", alpha=0.35, color=colour)
        ax.hist(values, bins=edges, histtype="step", linewidth=1.5, color=colour, label=f"{label} (n={len(values)})")
    ax.set_xlabel("selector weight p(omega) (1 = uniform SFT weight)")
    ax.set_ylabel("fine-tuning rows (count)")
    ax.set_title(title, fontsize=11)
    ax.legend(title="ground truth", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path
