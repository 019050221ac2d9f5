"""Results DataFrame -> table models: one row per cell of an ablation, one column per metric.

Every cell x seed row stays visible: a cell with no usable value says why (failed with its reason,
running, missing, or n/a for a metric the cell does not measure), and a cell with some seeds not done
counts only its done seeds and lists the others in its Notes column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from analysis.ablations import (
    ALGORITHM_ABLATION, Ablation, ablation_reference, ablation_rows, is_missing, is_reference, key_values)
from analysis.stats import CONFIDENCE, MARKS, mean_ci, paired_test
from analysis.table_model import Cell, Column, Row, Table

DONE = "done"
# Order in which a cell's unfinished seeds are reported.
STATUS_ORDER = ("failed", "interrupted", "running", "missing")
STAGE_ORDER = ("base", "selector", "finetune", "generate")
REASON_CHARS = 60
NOT_MEASURED = "n/a"


@dataclass(frozen=True)
class Metric:
    column: str
    header: str
    decimals: int = 2
    scale: float = 1.0  # 100 turns a 0-1 rate into the percent the table shows
    unit: str = ""


WINRATE_METRICS = (
    Metric("winrate/hh", "HH win rate", 2, unit="%"),
    Metric("winrate/orca", "SlimOrca win rate", 2, unit="%"),
    Metric("winrate/hexphi", "HEx-PHI win rate", 2, unit="%"),
)
SAFETY_METRIC = Metric("safety/refusal_rate", "HEx-PHI refusal", 1, scale=100.0, unit="%")
SELECTOR_METRICS = (
    Metric("selector/auroc_unsafe", "Selector AUROC", 3),
    Metric("selector/dropped_unsafe_share", "Unsafe share of dropped", 1, scale=100.0, unit="%"),
)


@dataclass(frozen=True)
class Measure:
    """A per-stage resource column family, `<prefix><stage><suffix>`."""

    prefix: str
    suffix: str
    unit: str
    decimals: int
    what: str

    def column(self, stage: str) -> str:
        return f"{self.prefix}{stage}{self.suffix}"

    def stage_of(self, column: str) -> str | None:
        matched = column.startswith(self.prefix) and column.endswith(self.suffix)
        stage = column[len(self.prefix): len(column) - len(self.suffix)] if matched else ""
        return stage or None


MEASURES = {"mem": Measure("mem/", "_peak_mb", "MB", 1, "Peak memory"),
            "time": Measure("time/", "_s", "s", 2, "Wall time")}
DEVICE_MEMORY = {"cpu": "peak RSS above baseline", "cuda": "max_memory_allocated"}


@dataclass
class CellGroup:
    """The rows (all seeds, all statuses) of one cell of an ablation."""

    label: str
    keys: dict[str, Any]
    is_reference: bool
    rows: pd.DataFrame

    def with_status(self, status: str) -> pd.DataFrame:
        # A numpy mask: the rows may repeat index labels (frames concatenated by the caller).
        return self.rows[(self.rows["status"] == status).to_numpy()]

    @property
    def done(self) -> pd.DataFrame:
        return self.with_status(DONE)


def cell_groups(rows: pd.DataFrame, ablation: Ablation, reference: Mapping[str, Any]) -> list[CellGroup]:
    """Cells in the ablation's order; rows are grouped by their key values, the cell's identity in the study."""
    members: dict[tuple, list[int]] = {}
    keys_of: dict[tuple, dict[str, Any]] = {}
    # Positions, not index labels: a concatenated frame can repeat labels.
    for position, (_, row) in enumerate(rows.iterrows()):
        keys = key_values(row, ablation)
        group_id = tuple((k, repr(v)) for k, v in keys.items())
        keys_of.setdefault(group_id, keys)
        members.setdefault(group_id, []).append(position)
    groups = [CellGroup(ablation.label(keys_of[g]), keys_of[g], is_reference(keys_of[g], reference),
                        rows.iloc[members[g]]) for g in members]
    return sorted(groups, key=lambda g: ablation.order(g.keys))


def seed_values(group: CellGroup, metric: Metric) -> dict[int, float]:
    """Metric per seed over done rows, in display units; NaN where the seed has no value."""
    done = group.done
    if metric.column not in done.columns or done.empty:
        return {}
    values = pd.to_numeric(done[metric.column], errors="coerce").astype(float) * metric.scale
    return {int(seed): float(value) for seed, value in values.groupby(done["seed"].to_numpy()).mean().items()}


def error_reason(error: Any) -> str:
    lines = [] if is_missing(error) else [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return "no error recorded"
    reason = lines[0]
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


def statuses_not_done(group: CellGroup) -> list[str]:
    present = set(group.rows["status"]) - {DONE}
    return [s for s in STATUS_ORDER if s in present] + sorted(str(s) for s in present - set(STATUS_ORDER))


def absent_text(group: CellGroup) -> str:
    """Why a cell shows no value: a done cell did not measure it, else the state of its seeds."""
    if not group.done.empty:
        return NOT_MEASURED
    states = [f"failed ({first_error(group)})" if s == "failed" else s for s in statuses_not_done(group)]
    return ", ".join(states) or "missing"


def unfinished_note(group: CellGroup) -> str:
    """The seeds that are not done, by status, so that a partial mean is never mistaken for a full one."""
    parts = []
    for status in statuses_not_done(group):
        seeds = ", ".join(str(int(s)) for s in sorted(group.with_status(status)["seed"]))
        parts.append(f"{status}: seed {seeds}" + (f" ({first_error(group)})" if status == "failed" else ""))
    return "; ".join(parts)


def first_error(group: CellGroup) -> str:
    failed = group.with_status("failed")
    return error_reason(failed["error"].iloc[0] if "error" in failed.columns and not failed.empty else None)


def metric_cells(groups: Sequence[CellGroup], metric: Metric, compare: bool) -> list[Cell]:
    reference = next((g for g in groups if g.is_reference), None)
    reference_values = seed_values(reference, metric) if reference else {}
    cells = []
    for group in groups:
        values = seed_values(group, metric)
        estimate = mean_ci(values.values())
        if estimate is None:
            cells.append(Cell(text=absent_text(group)))
            continue
        test = paired_test(values, reference_values) if compare and group is not reference else None
        done_seeds = group.done["seed"].nunique()
        cells.append(Cell(estimate, test, note="" if estimate.n == done_seeds else f"n={estimate.n}"))
    return cells


def mark_best(cells: Sequence[Cell], decimals: int) -> None:
    """Bold the highest mean (every metric here is better higher); ties at display precision all bold."""
    means = [round(c.estimate.mean, decimals) for c in cells if c.estimate is not None]
    if len(means) < 2:  # a lone value is not "best" of anything
        return
    best = max(means)
    for cell in cells:
        cell.bold = cell.estimate is not None and round(cell.estimate.mean, decimals) == best


def header(metric: Metric) -> str:
    return f"{metric.header} ({metric.unit})" if metric.unit else metric.header


def build_table(groups: Sequence[CellGroup], metrics: Sequence[Metric], *, name: str, title: str, row_header: str,
                compare: bool = True, bold: bool = True, caption: str = "") -> Table:
    """The shared core: n, one estimate column per metric, then Notes when a cell has unfinished seeds."""
    columns = [Column("n", "n", kind="text")]
    by_row: list[dict[str, Cell]] = [{"n": Cell(text=str(g.done["seed"].nunique()))} for g in groups]
    for metric in metrics:
        cells = metric_cells(groups, metric, compare)
        if bold:
            mark_best(cells, metric.decimals)
        columns.append(Column(metric.column, header(metric), decimals=metric.decimals, unit=metric.unit))
        for row_cells, cell in zip(by_row, cells):
            row_cells[metric.column] = cell
    notes = [unfinished_note(g) for g in groups]
    if any(notes):
        columns.append(Column("notes", "Notes", kind="text"))
        for row_cells, note in zip(by_row, notes):
            row_cells["notes"] = Cell(text=note)
    rows = [Row(g.label, cells, g.keys, g.is_reference) for g, cells in zip(groups, by_row)]
    has_na = any(cell.text == NOT_MEASURED for row in rows for cell in row.cells.values() if cell.estimate is None)
    return Table(name, title, row_header, columns, rows, caption, legend(groups, compare, bold, has_na))


def legend(groups: Sequence[CellGroup], compare: bool, bold: bool, has_na: bool = False) -> list[str]:
    notes = [f"Mean ± half-width of the {CONFIDENCE:.0%} Student-t confidence interval over seeds (n-1 dof)."]
    if has_na:
        notes.append(f"{NOT_MEASURED}: the cell ran but has no value for this metric (NaN in every done seed).")
    if compare:
        marks = ", ".join(f"{mark} p<{threshold:g}" for threshold, mark in reversed(MARKS))
        notes.append(f"{marks}: paired t-test against the reference row over the seeds both have (none below 2 pairs).")
        if groups and not any(g.is_reference for g in groups):
            notes.append("The reference cell is not in these results, so no row is tested.")
    if bold:
        notes.append("Bold: best value of the column (higher is better).")
    return notes


def default_metrics(rows: pd.DataFrame) -> list[Metric]:
    """Win rates and safety always (absent ones show as n/a); selector quality where some row measured it."""
    present = [m for m in SELECTOR_METRICS
               if m.column in rows.columns and pd.to_numeric(rows[m.column], errors="coerce").notna().any()]
    return [*WINRATE_METRICS, SAFETY_METRIC, *present]


def ablation_table(frame: pd.DataFrame, ablation: Ablation, *, reference: Mapping[str, Any] | None = None,
                   swept: Sequence[str] | None = None, metrics: Sequence[Metric] | None = None) -> Table:
    """Win rates, safety and selector quality of each cell of `ablation`, tested against its reference cell."""
    rows = ablation_rows(frame, ablation, reference=reference, swept=swept)
    groups = cell_groups(rows, ablation, ablation_reference(ablation, reference))
    metrics = default_metrics(rows) if metrics is None else metrics
    return build_table(groups, metrics, name=ablation.name, title=ablation.title, row_header=ablation.row_header)


def stages(frame: pd.DataFrame, measure: str) -> list[str]:
    """Stages with a column for the measure, the pipeline's order first, any other stage after them."""
    found = [stage for c in frame.columns if (stage := MEASURES[measure].stage_of(c))]
    return sorted(found, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))


def stage_metric(measure: str, stage: str) -> Metric:
    spec = MEASURES[measure]
    return Metric(spec.column(stage), stage, spec.decimals, unit=spec.unit)


def device_of(group: CellGroup) -> str:
    if "prov/device" not in group.rows.columns:
        return "unknown"
    devices = sorted({str(d) for d in group.done["prov/device"] if not is_missing(d)})
    return "/".join(devices) or "unknown"


def resource_table(frame: pd.DataFrame, measure: Literal["mem", "time"] = "mem",
                   ablation: Ablation | None = ALGORITHM_ABLATION, *, reference: Mapping[str, Any] | None = None,
                   swept: Sequence[str] | None = None) -> Table:
    """Peak memory or wall time per stage for the cells of `ablation` (None: every cell, by its label)."""
    if ablation is None:
        ablation = Ablation("cells", "All cells", "Cell", ("label",), {})
        rows = frame
    else:
        rows = ablation_rows(frame, ablation, reference=reference, swept=swept)
    groups = cell_groups(rows, ablation, ablation_reference(ablation, reference))
    measured = [stage_metric(measure, s) for s in stages(frame, measure)]
    metrics = [m for m in measured if pd.to_numeric(rows[m.column], errors="coerce").notna().any()]
    devices = [device_of(g) for g in groups]
    what = MEASURES[measure].what
    caption = f"{what} per stage ({MEASURES[measure].unit})"
    if len(set(devices)) == 1:
        kind = devices[0]
        caption += f" on {kind}" + (f" ({DEVICE_MEMORY[kind]})" if measure == "mem" and kind in DEVICE_MEMORY else "")
    table = build_table(groups, metrics, name=f"{measure}_{ablation.name}", title=f"{what}: {ablation.title}",
                        row_header=ablation.row_header, compare=False, bold=False, caption=caption)
    # The device is a column as well as in the caption: CPU and GPU peaks measure different things.
    table.columns.insert(1, Column("device", "Device", kind="text"))
    for row, device in zip(table.rows, devices):
        row.cells["device"] = Cell(text=device)
    return table
