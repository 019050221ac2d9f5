"""Results DataFrame -> table models: one row per cell of an ablation, one column per metric.

Every cell x seed row stays visible: a cell with no usable value says why (failed with its reason,
running, missing, or n/a for a metric the cell does not measure), and a cell with some seeds not done
counts only its done seeds and lists the others in its Notes column.

Win and refusal rates use the per-prompt outcomes (results.load_prompts) when every done seed of a cell
has them: a clustered bootstrap interval, and tests on paired per-prompt differences. Without them, and
for every other metric, the per-seed values give a Student-t interval and a paired t-test (stats.py).
Which differences may be claimed (Holm, bold, detectable differences) is decided in significance.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from analysis.ablations import (
    ALGORITHM_ABLATION, CONFIG, MAIN_TABLE, Ablation, Setting, ablation_reference, ablation_rows, is_missing,
    is_reference, key_values)
from analysis.significance import finalize, interval_legend
from analysis.stats import (
    UNBOUNDED, Bounds, Estimate, PairedTest, clustered_bootstrap, clustered_paired_test, mean_ci, paired_test)
from analysis.table_model import Cell, Column, Row, Table

DONE = "done"
# Order in which a cell's unfinished seeds are reported.
STATUS_ORDER = ("failed", "interrupted", "running", "missing")
STAGE_ORDER = ("base", "selector", "finetune", "generate")
REASON_CHARS = 60
NOT_MEASURED = "n/a"
NOT_RECORDED = "not recorded"  # a stated setting's column is absent or empty (results from before the field)
PERCENT: Bounds = (0.0, 100.0)
UNIT_INTERVAL: Bounds = (0.0, 1.0)
NON_NEGATIVE: Bounds = (0.0, None)


@dataclass(frozen=True)
class Outcome:
    """Where a metric's per-prompt outcome lives in the prompts frame: test set, column, display scale."""

    test_set: str
    column: str
    scale: float = 100.0  # outcomes are 0-1 per prompt; the tables show percent
    category: str | None = None  # only the prompts of this category (the per-category breakdown)


@dataclass(frozen=True)
class Metric:
    column: str
    header: str
    decimals: int = 2
    scale: float = 1.0  # 100 turns a 0-1 rate into the percent the table shows
    unit: str = ""
    bounds: Bounds = UNBOUNDED  # the metric's range in display units: intervals never leave it
    higher_is_better: bool = True
    outcome: Outcome | None = None


WIN_SETS = (("hh", "HH"), ("orca", "SlimOrca"), ("hexphi", "HEx-PHI"))
WINRATE_METRICS = tuple(Metric(f"winrate/{key}", f"{name} win rate", 2, unit="%", bounds=PERCENT,
                               outcome=Outcome(key, "win")) for key, name in WIN_SETS)
SAFETY_METRIC = Metric("safety/refusal_rate", "HEx-PHI refusal", 1, scale=100.0, unit="%", bounds=PERCENT,
                       outcome=Outcome("hexphi", "refused"))
SELECTOR_METRICS = (
    Metric("selector/auroc_unsafe", "Selector AUROC", 3, bounds=UNIT_INTERVAL),
    Metric("selector/dropped_unsafe_share", "Unsafe share of dropped", 1, scale=100.0, unit="%", bounds=PERCENT),
)
# Shown where some row measured them (worlds and judges that report them).
OPTIONAL_METRICS = (
    Metric("safety/over_refusal_rate", "Over-refusal", 1, scale=100.0, unit="%", bounds=PERCENT,
           higher_is_better=False, outcome=Outcome("xstest", "refused")),
    Metric("safety/refusal_logprob_margin", "Refusal log-prob margin", 2),
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


def outcome_values(prompts: pd.DataFrame | None, group: CellGroup, metric: Metric) -> dict[int, pd.Series] | None:
    """Per done seed, the metric's per-prompt outcomes indexed by prompt (key, occurrence); None unless
    every done seed with a value has them (a half per-prompt, half per-seed cell would mix two methods)."""
    if prompts is None or prompts.empty or metric.outcome is None or group.done.empty:
        return None
    outcome = metric.outcome
    # (cell, seed) pairs, not cells: a seed the frame does not hold (e.g. retired by --seeds) has prompts
    # in storage too, and must not enter the bootstrap of a row that counts n seeds.
    done = pd.MultiIndex.from_arrays([group.done["cell_id"], group.done["seed"].astype(int)])
    pairs = pd.MultiIndex.from_arrays([prompts["cell_id"], prompts["seed"].astype(int)])
    mask = pairs.isin(done) & (prompts["test_set"] == outcome.test_set).to_numpy()
    if outcome.category is not None:
        mask &= (prompts["category"] == outcome.category).to_numpy()
    mine = prompts[mask]
    by_seed = {}
    for seed, part in mine.groupby("seed"):
        # The occurrence number keeps a prompt that appears twice in a test set as two pairs, not four.
        index = pd.MultiIndex.from_arrays([part["prompt_key"], part.groupby("prompt_key").cumcount()])
        values = pd.Series(part[outcome.column].to_numpy(dtype=float), index=index)
        if values.notna().any():
            by_seed[int(seed)] = values
    # Seeds with a value in the results frame must all have prompts; a breakdown column has no such value.
    in_frame = metric.column in group.done.columns
    needed = ({s for s, v in seed_values(group, metric).items() if v == v} if in_frame
              else {int(s) for s in group.done["seed"]})
    return by_seed if needed and needed <= by_seed.keys() else None


def cell_estimate(group: CellGroup, metric: Metric, outcomes: dict[int, pd.Series] | None) -> Estimate | None:
    if outcomes is not None:
        return clustered_bootstrap({s: v.to_numpy() for s, v in outcomes.items()}, metric.outcome.scale, metric.bounds)
    return mean_ci(seed_values(group, metric).values(), metric.bounds)


def paired_prompts(outcomes: dict[int, pd.Series], reference_outcomes: dict[int, pd.Series]) -> dict[int, Any]:
    """Per seed both cells have: the per-prompt differences over the prompts both were judged on."""
    return {s: (outcomes[s] - reference_outcomes[s]).dropna().to_numpy()
            for s in outcomes.keys() & reference_outcomes.keys()}


def cell_test(group: CellGroup, reference: CellGroup, metric: Metric, outcomes: dict[int, pd.Series] | None,
              reference_outcomes: dict[int, pd.Series] | None) -> PairedTest | None:
    """Per-prompt paired differences when both cells have them, else the paired t-test over seed values."""
    if outcomes is not None and reference_outcomes is not None:
        return clustered_paired_test(paired_prompts(outcomes, reference_outcomes), metric.outcome.scale)
    return paired_test(seed_values(group, metric), seed_values(reference, metric))


def metric_cells(groups: Sequence[CellGroup], metric: Metric, compare: bool,
                 prompts: pd.DataFrame | None = None) -> list[Cell]:
    reference = next((g for g in groups if g.is_reference), None)
    reference_outcomes = outcome_values(prompts, reference, metric) if reference else None
    cells = []
    for group in groups:
        outcomes = outcome_values(prompts, group, metric)
        estimate = cell_estimate(group, metric, outcomes)
        if estimate is None:
            cells.append(Cell(text=absent_text(group)))
            continue
        test = (cell_test(group, reference, metric, outcomes, reference_outcomes)
                if compare and reference is not None and group is not reference else None)
        done_seeds = group.done["seed"].nunique()
        cells.append(Cell(estimate, test, note="" if estimate.n == done_seeds else f"n={estimate.n}"))
    return cells


def header(metric: Metric) -> str:
    return f"{metric.header} ({metric.unit})" if metric.unit else metric.header


def build_table(groups: Sequence[CellGroup], metrics: Sequence[Metric], *, name: str, title: str, row_header: str,
                compare: bool = True, caption: str = "", prompts: pd.DataFrame | None = None) -> Table:
    """The shared core: n, one estimate column per metric, then Notes when a cell has unfinished seeds."""
    columns = [Column("n", "n", kind="text")]
    by_row: list[dict[str, Cell]] = [{"n": Cell(text=str(g.done["seed"].nunique()))} for g in groups]
    for metric in metrics:
        cells = metric_cells(groups, metric, compare, prompts)
        columns.append(Column(metric.column, header(metric), decimals=metric.decimals, unit=metric.unit,
                              higher_is_better=metric.higher_is_better, bounds=metric.bounds))
        for row_cells, cell in zip(by_row, cells):
            row_cells[metric.column] = cell
    notes = [unfinished_note(g) for g in groups]
    if any(notes):
        columns.append(Column("notes", "Notes", kind="text"))
        for row_cells, note in zip(by_row, notes):
            row_cells["notes"] = Cell(text=note)
    rows = [Row(g.label, cells, g.keys, g.is_reference) for g, cells in zip(groups, by_row)]
    table = Table(name, title, row_header, columns, rows, caption, compared=compare)
    table.notes = legend(table, groups, compare)
    return table


def legend(table: Table, groups: Sequence[CellGroup], compare: bool) -> list[str]:
    notes = interval_legend(table)
    if any(cell.text == NOT_MEASURED for row in table.rows for cell in row.cells.values() if cell.estimate is None):
        notes.append(f"{NOT_MEASURED}: the cell ran but has no value for this metric (NaN in every done seed).")
    if compare and groups and not any(g.is_reference for g in groups):
        notes.append("The reference cell is not in these results, so no row is tested.")
    return notes


def measured(rows: pd.DataFrame, metrics: Sequence[Metric]) -> list[Metric]:
    return [m for m in metrics if m.column in rows.columns and pd.to_numeric(rows[m.column], errors="coerce").notna().any()]


def default_metrics(rows: pd.DataFrame) -> list[Metric]:
    """Win rates and safety always (absent ones show as n/a); selector quality and optional safety metrics
    where some row measured them."""
    return [*WINRATE_METRICS, SAFETY_METRIC, *measured(rows, OPTIONAL_METRICS), *measured(rows, SELECTOR_METRICS)]


def ablation_table(frame: pd.DataFrame, ablation: Ablation, *, prompts: pd.DataFrame | None = None,
                   reference: Mapping[str, Any] | None = None, swept: Sequence[str] | None = None,
                   metrics: Sequence[Metric] | None = None, correct: bool = True) -> Table:
    """Win rates, safety and selector quality of each cell of `ablation`, tested against its reference cell.

    correct: apply Holm over this table's own tests; a report passes False and corrects all its tables
    together (significance.finalize).
    """
    rows = ablation_rows(frame, ablation, reference=reference, swept=swept)
    groups = cell_groups(rows, ablation, ablation_reference(ablation, reference))
    metrics = default_metrics(rows) if metrics is None else metrics
    table = build_table(groups, metrics, name=ablation.name, title=ablation.title, row_header=ablation.row_header,
                        prompts=prompts)
    state_settings(table, groups, ablation.stated)
    if correct:
        finalize([table], "this table")
    return table


def setting_values(group: CellGroup, setting: Setting) -> list[str]:
    """The setting's values over a cell's rows."""
    if setting.column not in group.rows.columns:
        return [NOT_RECORDED]
    return sorted({NOT_RECORDED if is_missing(value) else str(value) for value in group.rows[setting.column]})


def described(setting: Setting, value: str) -> str:
    meaning = setting.meanings.get(value)
    return f"{value} ({meaning})" if meaning else value


def state_settings(table: Table, groups: Sequence[CellGroup], settings: Sequence[Setting]) -> None:
    """Name each setting in a note under the table; where its rows differ, also in a column beside n."""
    for position, setting in enumerate(settings):
        per_row = [setting_values(group, setting) for group in groups]
        values = sorted({value for row_values in per_row for value in row_values})
        if not values:
            continue
        named = f"{setting.name} ({setting.column.removeprefix(CONFIG)})"
        if len(values) > 1:
            named += ", per row in its column"
            table.columns.insert(1 + position, Column(setting.column, setting.name, kind="text"))
            for row, row_values in zip(table.rows, per_row):
                row.cells[setting.column] = Cell(text=", ".join(row_values))
        table.notes.insert(position, f"{named}: " + "; ".join(described(setting, value) for value in values) + ".")


CATEGORY_TEST_SET = "hexphi"


def category_table(frame: pd.DataFrame, prompts: pd.DataFrame | None, ablation: Ablation = MAIN_TABLE, *,
                   reference: Mapping[str, Any] | None = None, swept: Sequence[str] | None = None) -> Table:
    """Refusal rate on each HEx-PHI harm category, per cell of `ablation`, with clustered bootstrap intervals.

    Descriptive (no tests): eleven categories of a few prompts each are for seeing where safety is lost.
    """
    hexphi = (prompts[prompts["test_set"] == CATEGORY_TEST_SET] if prompts is not None and not prompts.empty
              else pd.DataFrame(columns=["category"]))
    categories = sorted({str(c) for c in hexphi["category"] if not is_missing(c)})
    # No unit in the header: eleven "(%)" would crowd the table; the caption says percent.
    metrics = [Metric(f"refusal/{category}", category, 1, bounds=PERCENT,
                      outcome=Outcome(CATEGORY_TEST_SET, "refused", category=category)) for category in categories]
    rows = ablation_rows(frame, ablation, reference=reference, swept=swept) if categories else frame.iloc[0:0]
    groups = cell_groups(rows, ablation, ablation_reference(ablation, reference))
    table = build_table(groups, metrics, name=f"categories_{ablation.name}", title="HEx-PHI refusal by harm category",
                        row_header=ablation.row_header, compare=False, prompts=prompts,
                        caption="Refusal rate (%) on the prompts of each harm category"
                                + ("" if categories else "; no per-prompt outcomes in these results"))
    return table


def stages(frame: pd.DataFrame, measure: str) -> list[str]:
    """Stages with a column for the measure, the pipeline's order first, any other stage after them."""
    found = [stage for c in frame.columns if (stage := MEASURES[measure].stage_of(c))]
    return sorted(found, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))


def stage_metric(measure: str, stage: str) -> Metric:
    spec = MEASURES[measure]
    return Metric(spec.column(stage), stage, spec.decimals, unit=spec.unit, bounds=NON_NEGATIVE)


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
    metrics = measured(rows, [stage_metric(measure, s) for s in stages(frame, measure)])
    devices = [device_of(g) for g in groups]
    what = MEASURES[measure].what
    caption = f"{what} per stage ({MEASURES[measure].unit})"
    if len(set(devices)) == 1:
        kind = devices[0]
        caption += f" on {kind}" + (f" ({DEVICE_MEMORY[kind]})" if measure == "mem" and kind in DEVICE_MEMORY else "")
    table = build_table(groups, metrics, name=f"{measure}_{ablation.name}", title=f"{what}: {ablation.title}",
                        row_header=ablation.row_header, compare=False, caption=caption)
    # The device is a column as well as in the caption: CPU and GPU peaks measure different things.
    table.columns.insert(1, Column("device", "Device", kind="text"))
    for row, device in zip(table.rows, devices):
        row.cells["device"] = Cell(text=device)
    return table
