"""The table model every renderer reads: computed once, rendered as markdown, LaTeX, CSV or bars.

Numbers stay numbers here (in display units: percent for rates shown as percent); the renderers only
format them, so the three formats and the plots can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from analysis.stats import UNBOUNDED, Bounds, Estimate, PairedTest

ColumnKind = Literal["estimate", "number", "text"]


@dataclass(frozen=True)
class Column:
    """`estimate`: mean with CI and mark; `number`: a bare value (the paper's); `text`: a string cell."""

    key: str
    header: str
    kind: ColumnKind = "estimate"
    decimals: int = 2
    unit: str = ""
    higher_is_better: bool = True  # which direction of a significant difference earns bold
    bounds: Bounds = UNBOUNDED  # the metric's range in display units


@dataclass
class Cell:
    estimate: Estimate | None = None
    test: PairedTest | None = None
    # Without an estimate: why ("failed (OOM)", "missing", "running", "n/a"); in a text column: the value.
    text: str = ""
    # Shown after the value, e.g. "n=2" when this metric has fewer finite seeds than the row has done.
    note: str = ""
    bold: bool = False  # significantly better than the reference row after the report's correction

    @property
    def mark(self) -> str:
        return self.test.mark if self.test else ""


@dataclass
class Row:
    label: str
    cells: dict[str, Cell]
    keys: dict[str, Any] = field(default_factory=dict)
    is_reference: bool = False


@dataclass
class Table:
    name: str
    title: str
    row_header: str
    columns: list[Column]
    rows: list[Row]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    compared: bool = False  # rows are tested against the reference row
    # Set by significance.finalize: sentences for the report's text (only differences that passed the
    # corrected test) and the minimum detectable difference of each column (None: not computable).
    findings: list[str] = field(default_factory=list)
    detectable: dict[str, float | None] = field(default_factory=dict)

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(f"table '{self.name}' has no row '{label}' (rows: {[r.label for r in self.rows]})")

    def cell(self, label: str, column_key: str) -> Cell:
        return self.row(label).cells[column_key]

    def column(self, key: str) -> Column:
        for column in self.columns:
            if column.key == key:
                return column
        raise KeyError(f"table '{self.name}' has no column '{key}' (columns: {[c.key for c in self.columns]})")
