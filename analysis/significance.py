"""What a report may claim: Holm over all its tests, bold, detectable differences, and its sentences.

The family is every test of one report (or of one table when a table is built on its own): the p-values
are Holm-Bonferroni adjusted together, a cell is bold only when its row is significantly better than the
reference after that correction, and the report's sentences name only such differences. Under each
table, the minimum detectable difference says how large an effect the seeds could have shown at the
strictest Holm step (alpha / m), so "not significant" is never read as "no effect".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from analysis.stats import (
    ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, MARKS, MIN_SEEDS, POWER, minimum_detectable_difference,
    pooled_sd, with_holm)
from analysis.table_model import Cell, Column, Row, Table


def tested(tables: Sequence[Table]) -> list[tuple[Table, Row, Column, Cell]]:
    return [(table, row, column, row.cells[column.key]) for table in tables for row in table.rows
            for column in table.columns if column.kind == "estimate" and row.cells[column.key].test is not None]


def finalize(tables: Sequence[Table], family: str) -> None:
    """Holm over every test of `tables` together; then bold, legend, detectable differences, findings."""
    entries = tested(tables)
    for (_, _, column, cell), test in zip(entries, with_holm([cell.test for *_, cell in entries])):
        cell.test = test
        cell.bold = test.significant() and test.diff != 0 and (test.diff > 0) == column.higher_is_better
    comparisons = len(entries)
    for table in tables:
        if not table.compared or not table.rows:
            continue
        table.notes += test_legend(comparisons, family)
        table.detectable = detectable_differences(table, comparisons)
        table.notes.append(power_line(table, comparisons))
        table.findings = findings(table, comparisons, family)


def interval_legend(table: Table) -> list[str]:
    """How the intervals of this table were made, one line per method that occurs in it."""
    methods = {cell.estimate.method for row in table.rows for cell in row.cells.values() if cell.estimate}
    lines = []
    if "bootstrap" in methods:
        lines.append(f"Win and refusal rates: mean [{CONFIDENCE:.0%} interval] from a clustered bootstrap "
                     f"({BOOTSTRAP_RESAMPLES} resamples of the seeds, then of the prompts within each seed; "
                     f"random seed {BOOTSTRAP_SEED}).")
    if "t" in methods:
        lines.append(f"Other values: mean [{CONFIDENCE:.0%} Student-t interval over seed means, n-1 dof], cut at "
                     "the metric's range where marked 'clipped'.")
    if "seeds" in methods:
        lines.append(f"Fewer than {MIN_SEEDS} seeds: the mean, then the per-seed values; no interval and no test.")
    return lines


def test_legend(comparisons: int, family: str) -> list[str]:
    marks = ", ".join(f"{mark} p<{threshold:g}" for threshold, mark in reversed(MARKS))
    return [f"Tests against the reference row, paired by seed (by seed and prompt for win and refusal rates, "
            f"clustered by seed: t-test with seeds-1 dof); none with fewer than {MIN_SEEDS} seeds. "
            f"p-values are Holm-Bonferroni adjusted over the {comparisons} comparisons of {family}; {marks}.",
            "Bold: significantly better than the reference row after that correction."]


def _pairs(tests) -> int:
    return Counter(test.pairs for test in tests).most_common(1)[0][0]


def detectable_differences(table: Table, comparisons: int) -> dict[str, float | None]:
    """Per column: the difference the typical row's seeds detect with POWER at alpha / comparisons."""
    alpha = ALPHA / max(comparisons, 1)
    detectable: dict[str, float | None] = {}
    for column in table.columns:
        tests = [row.cells[column.key].test for row in table.rows
                 if column.kind == "estimate" and row.cells[column.key].test is not None]
        if column.kind != "estimate":
            continue
        if not tests:
            detectable[column.key] = None
            continue
        sd = pooled_sd((test.sd, test.pairs) for test in tests)
        detectable[column.key] = minimum_detectable_difference(sd, _pairs(tests), alpha)
    return detectable


def _amount(value: float, column: Column) -> str:
    unit = " points" if column.unit == "%" else (f" {column.unit}" if column.unit else "")
    return f"{value:.{column.decimals}f}{unit}"


def _detectable(value: float | None, column: Column) -> str:
    if value is None:
        return "n/a"
    low, high = column.bounds
    if low is not None and high is not None and value > high - low:
        return f"none within the range ({_amount(value, column)})"
    return _amount(value, column)


def _name(column: Column) -> str:
    return column.header.removesuffix(f" ({column.unit})") if column.unit else column.header


def power_line(table: Table, comparisons: int) -> str:
    columns = {c.key: c for c in table.columns}
    parts = [f"{_name(columns[key])} {_detectable(value, columns[key])}"
             for key, value in table.detectable.items()]
    tests = [cell.test for row in table.rows for cell in row.cells.values() if cell.test is not None]
    if not tests:
        return (f"Minimum detectable difference: not computable, no row has {MIN_SEEDS} seeds paired with the "
                "reference.")
    return (f"Minimum detectable difference against the reference ({POWER:.0%} power, two-sided alpha "
            f"{ALPHA:g}/{comparisons}, the strictest Holm step, {_pairs(tests)} seeds, from the pooled spread of "
            f"per-seed differences): " + "; ".join(parts) + ".")


def findings(table: Table, comparisons: int, family: str) -> list[str]:
    """One sentence per row with differences that pass the corrected test; else one sentence saying none do."""
    reference = next((row.label for row in table.rows if row.is_reference), None)
    if reference is None:
        return []
    sentences = []
    for row in table.rows:
        parts = []
        for column in table.columns:
            test = row.cells[column.key].test if column.kind == "estimate" else None
            if test is not None and test.significant():
                direction = "higher" if test.diff > 0 else "lower"
                parts.append(f"{_name(column)} {direction} by {_amount(abs(test.diff), column)} "
                             f"(Holm-adjusted p = {test.p:.2g}, {test.pairs} seeds)")
        if parts:
            sentences.append(f"{row.label} vs {reference}: " + "; ".join(parts) + ".")
    if sentences:
        return sentences
    if not tested([table]):
        return [f"No difference is claimed: no row has {MIN_SEEDS} seeds paired with {reference}."]
    return [f"No row differs from {reference} after Holm correction over the {comparisons} comparisons of {family}."]
