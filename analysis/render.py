"""Table models -> markdown (terminal, README), LaTeX (booktabs, ready to \\input) and CSV (long format).

All three read the same `Table`; only the syntax of bold, marks and escapes differs between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.table_model import Cell, Column, Row, Table

REFERENCE_SUFFIX = " (reference)"
EMPTY = "No cells of this study in the results."


@dataclass(frozen=True)
class CellParts:
    """A cell split into the pieces whose syntax differs per format."""

    value: str  # the mean, a bare number, or the cell's text
    mark: str = ""  # significance mark (Holm-adjusted), after the value
    interval: str = ""  # "[low, high]"
    extras: tuple[str, ...] = ()  # parenthetical remarks: "seeds 51.2, 53.0", "clipped", "n=2"
    bold: bool = False
    is_text: bool = False  # True when value is free text to escape, not a formatted number


def format_number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def cell_parts(cell: Cell, column: Column) -> CellParts:
    estimate = cell.estimate
    if column.kind == "text" or estimate is None:
        return CellParts(cell.text, is_text=True)
    value = format_number(estimate.mean, column.decimals)
    if column.kind == "number":
        return CellParts(value, bold=cell.bold)
    interval = ""
    extras = []
    if estimate.has_interval:
        interval = f"[{format_number(estimate.ci_low, column.decimals)}, {format_number(estimate.ci_high, column.decimals)}]"
        extras += ["clipped"] if estimate.clipped else []
    elif estimate.seed_values:
        word = "seed" if len(estimate.seed_values) == 1 else "seeds"
        extras.append(f"{word} " + ", ".join(format_number(v, column.decimals) for v in estimate.seed_values))
    else:
        extras.append("no interval")
    extras += [cell.note] if cell.note else []
    return CellParts(value, cell.mark, interval, tuple(extras), cell.bold)


def row_label(row: Row) -> str:
    return row.label + (REFERENCE_SUFFIX if row.is_reference else "")


# --- markdown ---------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    # Pipes would split the cell and asterisks start emphasis; intraword underscores (D_ft) are safe in GFM.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def markdown_cell(cell: Cell, column: Column) -> str:
    parts = cell_parts(cell, column)
    if parts.is_text:
        return _md_escape(parts.value)
    value = parts.value + _md_escape(parts.mark)
    text = f"**{value}**" if parts.bold else value
    if parts.interval:
        text += f" {parts.interval}"
    if parts.extras:
        text += f" ({'; '.join(parts.extras)})"
    return text


def render_markdown(table: Table, heading: str = "###") -> str:
    lines = [f"{heading} {table.title}", ""]
    if table.caption:
        lines += [table.caption, ""]
    if not table.rows:
        return "\n".join(lines + [f"_{EMPTY}_", ""])
    grid = [[table.row_header, *(c.header for c in table.columns)]]
    grid += [[_md_escape(row_label(row)), *(markdown_cell(row.cells[c.key], c) for c in table.columns)]
             for row in table.rows]
    # Padded columns so the table also reads as a table in a terminal.
    widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"
    lines += [fmt(grid[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, grid[1:])]
    if table.notes:
        lines += [""] + [_md_escape(note) for note in table.notes]
    if table.findings:
        lines += [""] + [_md_escape(sentence) for sentence in table.findings]
    return "\n".join(lines + [""])


# --- LaTeX ------------------------------------------------------------------------------------------

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                 "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def latex_cell(cell: Cell, column: Column) -> str:
    parts = cell_parts(cell, column)
    if parts.is_text:
        return latex_escape(parts.value)
    text = rf"\textbf{{{parts.value}}}" if parts.bold else parts.value
    if parts.mark:
        text += rf"\textsuperscript{{{parts.mark}}}"
    if parts.interval:
        text += f" {parts.interval}"
    if parts.extras:
        text += f" ({latex_escape('; '.join(parts.extras))})"
    return text


def render_latex(table: Table) -> str:
    """A `table` float with a booktabs `tabular`; needs only \\usepackage{booktabs}."""
    if not table.rows:
        return f"% {latex_escape(table.title)}: {EMPTY}\n"
    spec = "l" + "".join("l" if c.key == "notes" else "c" for c in table.columns)
    caption = latex_escape(table.title + (f". {table.caption}" if table.caption else ""))
    header = " & ".join(latex_escape(h) for h in [table.row_header, *(c.header for c in table.columns)])
    body = [" & ".join([latex_escape(row_label(row)), *(latex_cell(row.cells[c.key], c) for c in table.columns)])
            + r" \\" for row in table.rows]
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
             rf"\label{{tab:{table.name.replace('_', '-')}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             header + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines += [r"\par\smallskip", r"{\footnotesize " + " ".join(latex_escape(n) for n in table.notes) + "}"]
    return "\n".join(lines + [r"\end{table}", ""])


# --- CSV --------------------------------------------------------------------------------------------

def csv_records(table: Table) -> list[dict]:
    """One record per table x row x column, numbers in their own columns (display units, see `unit`)."""
    records = []
    for row in table.rows:
        for column in table.columns:
            cell = row.cells[column.key]
            estimate, test = cell.estimate, cell.test
            has_number = column.kind != "text" and estimate is not None
            is_estimate = has_number and column.kind == "estimate"
            records.append({
                "table": table.name, "row": row.label, "reference": row.is_reference, "column": column.key,
                "header": column.header, "unit": column.unit,
                "mean": estimate.mean if has_number else math.nan,
                "ci_low": _or_nan(estimate.ci_low) if is_estimate else math.nan,
                "ci_high": _or_nan(estimate.ci_high) if is_estimate else math.nan,
                "n": estimate.n if is_estimate else pd.NA,
                "clipped": bool(is_estimate and estimate.clipped),
                "interval": estimate.method if is_estimate else "",
                "diff_vs_reference": test.diff if test else math.nan,
                "p_value": test.p_value if test else math.nan,
                "p_holm": test.p if test else math.nan,
                "pairs": test.pairs if test else pd.NA,
                "mark": cell.mark, "bold": cell.bold,
                "text": "" if has_number else cell.text,
            })
    return records


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def render_csv(tables: Sequence[Table]) -> str:
    records = [record for table in tables for record in csv_records(table)]
    frame = pd.DataFrame(records, columns=list(CSV_COLUMNS))
    frame["n"] = frame["n"].astype("Int64")
    frame["pairs"] = frame["pairs"].astype("Int64")
    return frame.to_csv(index=False)


CSV_COLUMNS = ("table", "row", "reference", "column", "header", "unit", "mean", "ci_low", "ci_high", "n", "clipped",
               "interval", "diff_vs_reference", "p_value", "p_holm", "pairs", "mark", "bold", "text")
