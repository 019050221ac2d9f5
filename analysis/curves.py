"""The selector's training curves in the report: one figure per SEAL ablation, one line per table row.

    curves = seal_ray.results.load_curves("runs/sweeps/demo")
    selector_curve_figures(frame, curves, out_dir)   # -> [(caption, "curves_activation.png"), ...]

Each figure has three panels: the selector gap over optimiser steps, the upper-level weight w in force
at each epoch, and by epoch the AUROC of the logits for clean vs unsafe rows (mini world; else the share
of p(omega) on unsafe rows, or nothing). Lines are the mean over seeds, the band their min..max.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis.ablations import SEAL_ABLATIONS, Ablation, ablation_rows, key_values
from analysis.plots import _save
from analysis.tables import DONE

SELECTOR = "selector"
# (metric, kind of point, y label); the last panel takes the first metric the curves hold.
PANELS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("selector_gap",), "step", "selector gap: mean l(theta) - l(theta_hat)\n(Alg. 2: l(theta))"),
    (("upper_weight",), "epoch", "upper-level weight w"),
    (("auroc_unsafe", "weight/share_unsafe"), "epoch", ""),
)
Y_LABELS = {"auroc_unsafe": "AUROC clean vs unsafe", "weight/share_unsafe": "share of p(omega) on unsafe rows"}


def selector_curve_figures(frame: pd.DataFrame, curves: pd.DataFrame, out_dir: str | Path,
                           ablations: Sequence[Ablation] = SEAL_ABLATIONS, **options: Any) -> list[tuple[str, str]]:
    """(caption, file name) of each ablation's selector-curve figure written into `out_dir`."""
    if curves is None or curves.empty or frame.empty:
        return []
    selector = curves[curves["stage"] == SELECTOR]
    figures = []
    for ablation in ablations:
        rows = ablation_rows(frame, ablation, **options)
        rows = rows[rows["status"] == DONE] if "status" in rows.columns else rows
        lines = _lines(rows, ablation, selector)
        if not lines:
            continue
        name = f"curves_{ablation.name}.png"
        title = f"{ablation.title}: selector training (mean over seeds, band min..max)"
        plot_selector_curves(lines, Path(out_dir) / name, title=title)
        figures.append((title, name))
    return figures


def _lines(rows: pd.DataFrame, ablation: Ablation, selector: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(row label, its cells' selector curves) per table row, in the table's order."""
    groups: dict[str, tuple[tuple, list[str]]] = {}
    for _, row in rows.iterrows():
        keys = key_values(row, ablation)
        label = ablation.label(keys)
        groups.setdefault(label, (ablation.order(keys), []))[1].append(row["cell_id"])
    lines = []
    for label, (_, cells) in sorted(groups.items(), key=lambda item: item[1][0]):
        points = selector[selector["cell"].isin(cells)]
        if not points.empty:
            lines.append((label, points))
    return lines


def plot_selector_curves(lines: Sequence[tuple[str, pd.DataFrame]], path: str | Path, *, title: str) -> Path:
    """Three panels (see PANELS); each line is one row's mean over seeds with a min..max band."""
    figure = Figure(figsize=(13.5, 3.9), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    for ax, (metrics, kind, y_label) in zip(axes, PANELS):
        available = [m for m in metrics if any((points["metric"] == m).any() for _, points in lines)]
        if not available:
            ax.set_axis_off()
            continue
        metric = available[0]
        for label, points in lines:
            series = points[(points["metric"] == metric) & (points["kind"] == kind)]
            if series.empty:
                continue
            x_column = "epoch" if kind == "epoch" else "step"
            stats = mean_band(series, x_column)
            x = stats.index.to_numpy(dtype=float) + (1.0 if kind == "epoch" else 0.0)  # epochs 1..E
            line = ax.plot(x, stats["mean"].to_numpy(), marker="o" if kind == "epoch" else None, markersize=3,
                           label=label)[0]
            ax.fill_between(x, stats["min"].to_numpy(), stats["max"].to_numpy(), color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch" if kind == "epoch" else "optimiser step")
        ax.set_ylabel(y_label or Y_LABELS.get(metric, metric))
        if kind == "epoch":
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = next(((ax.get_legend_handles_labels()) for ax in axes if ax.get_legend_handles_labels()[0]), ([], []))
    if handles:
        figure.legend(handles, labels, loc="outside right upper", fontsize=8)
    figure.suptitle(title, fontsize=11)
    return _save(figure, path)


def mean_band(series: pd.DataFrame, x_column: str) -> pd.DataFrame:
    """Mean, min and max over seeds at each x (what a line and its band show)."""
    return series.groupby(x_column)["value"].agg(["mean", "min", "max"]).sort_index()
