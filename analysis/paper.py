"""Our main table next to the paper's Llama-3 numbers, and whether each effect points the same way.

The mini world is not Llama-3, so the numbers are not expected to match; what can agree is the
direction of each method's effect: a win rate above or below 50, which is Standard SFT by construction.
A direction counts only where our interval excludes 50; otherwise it is "not established", counted apart.
"""

from __future__ import annotations

from analysis.ablations import METHOD
from analysis.table_model import Cell, Column, Row, Table
from analysis.stats import Estimate

NEUTRAL = 50.0  # Standard SFT's win rate against itself
TEST_SETS = (("hh", "HH"), ("orca", "SlimOrca"), ("hexphi", "HEx-PHI"))

# SEAL.md, "Paper's Llama-3-8B-Instruct table" (win rate vs Standard SFT, %), keyed by selection.method.
PAPER_LLAMA3: dict[str, tuple[str, dict[str, float]]] = {
    "sft": ("Standard SFT", {"hh": 50.0, "orca": 50.0, "hexphi": 50.0}),
    "random": ("Random selection", {"hh": 50.78, "orca": 50.80, "hexphi": 56.31}),
    "dsir": ("DSIR", {"hh": 57.57, "orca": 55.84, "hexphi": 53.95}),
    "safeinstr": ("SafeInstr", {"hh": 57.97, "orca": 54.22, "hexphi": 64.49}),
    "seal": ("SEAL", {"hh": 60.22, "orca": 53.88, "hexphi": 69.29}),
    "seal_safeinstr": ("SEAL + SafeInstr", {"hh": 67.19, "orca": 53.91, "hexphi": 77.28}),
}


def direction(win_rate: float) -> str:
    if win_rate > NEUTRAL:
        return "above"
    return "below" if win_rate < NEUTRAL else "at"


NOT_ESTABLISHED = "not established"


def agreement(ours: Cell, paper: float | None, method: str) -> str:
    """'yes'/'no' where our interval excludes 50; 'not established' where it spans 50 or there is none."""
    if method == "sft":
        return "reference"
    if paper is None or ours.estimate is None:
        return "n/a"
    estimate = ours.estimate
    if not estimate.has_interval:
        return f"{NOT_ESTABLISHED} (no interval)"
    if estimate.ci_low <= NEUTRAL <= estimate.ci_high:
        return f"{NOT_ESTABLISHED} (interval spans 50)"
    return "yes" if direction(estimate.mean) == direction(paper) else "no"


def _ours(main: Table, method: str) -> Row | None:
    return next((row for row in main.rows if row.keys.get(METHOD) == method), None)


def paper_comparison(main: Table) -> Table:
    """Rows: the paper's methods, then methods we ran that the paper has not; per test set ours | paper | agrees."""
    columns = []
    for key, name in TEST_SETS:
        columns += [Column(f"{key}/ours", f"{name} ours (%)", decimals=2, unit="%"),
                    Column(f"{key}/paper", f"{name} paper (%)", kind="number", decimals=2, unit="%"),
                    Column(f"{key}/agrees", f"{name} direction agrees", kind="text")]
    ours_only = [row.keys.get(METHOD) for row in main.rows if row.keys.get(METHOD) not in PAPER_LLAMA3]
    rows = []
    for method in [*PAPER_LLAMA3, *dict.fromkeys(ours_only)]:
        paper_label, paper_values = PAPER_LLAMA3.get(method, (None, {}))
        ours_row = _ours(main, method)
        cells: dict[str, Cell] = {}
        for key, _ in TEST_SETS:
            ours = ours_row.cells.get(f"winrate/{key}", Cell(text="n/a")) if ours_row else Cell(text="not run")
            paper = paper_values.get(key)
            cells[f"{key}/ours"] = Cell(ours.estimate, text=ours.text, note=ours.note)
            cells[f"{key}/paper"] = (Cell(Estimate(paper, None, None, 1)) if paper is not None
                                     else Cell(text="not in paper"))
            cells[f"{key}/agrees"] = Cell(text=agreement(ours, paper, method))
        label = paper_label or (ours_row.label if ours_row else str(method))
        rows.append(Row(label, cells, {METHOD: method}, is_reference=method == "sft"))
    table = Table("paper", "Comparison with the paper (Llama-3-8B-Instruct)", "Method", columns, rows,
                  caption="Win rate against Standard SFT (%): this sweep's main table next to SEAL.md's "
                          "Llama-3-8B-Instruct table.")
    table.notes = [
        "Direction: whether the win rate is above or below 50 (Standard SFT). It agrees or not only where our "
        "95% interval excludes 50; where the interval spans 50, or there is none (fewer than 3 seeds), our "
        "direction is not established and counted apart.",
        *(_summary(rows, key, name) for key, name in TEST_SETS)]
    return table


def _summary(rows: list[Row], key: str, name: str) -> str:
    verdicts = {row.label: row.cells[f"{key}/agrees"].text for row in rows}
    agree = [label for label, v in verdicts.items() if v == "yes"]
    disagree = [label for label, v in verdicts.items() if v == "no"]
    unsure = [label for label, v in verdicts.items() if v.startswith(NOT_ESTABLISHED)]
    if not (agree or disagree or unsure):
        return f"{name}: no method both run here and in the paper besides Standard SFT."
    established = len(agree) + len(disagree)
    return (f"{name}: direction agrees for {len(agree)} of {established} methods whose interval excludes 50"
            + (f" (disagrees: {', '.join(disagree)})" if disagree else "")
            + f"; not established for {len(unsure)}" + (f" ({', '.join(unsure)})" if unsure else "") + ".")
