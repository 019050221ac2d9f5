"""The whole report of a sweep: report.md, tables.tex, tables.csv and the PNGs, from one results DataFrame.

    frame = seal_ray.results.load("runs/sweeps/demo")
    prompts = seal_ray.results.load_prompts("runs/sweeps/demo")   # per-prompt outcomes (optional)
    write_report(frame, "runs/sweeps/demo/report", prompts=prompts)   # -> .../report/report.md
    print(render_tables_markdown(frame, prompts=prompts))           # the same tables in a terminal

Every test of the report is one Holm-Bonferroni family (significance.py): its marks, bold cells and the
sentences under each table count only differences that pass the corrected test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.ablations import (
    ACTIVATION_ABLATION, ALGORITHM_ABLATION, MAIN_TABLE, SEAL_ABLATIONS, ablation_rows, is_missing)
from analysis.curves import selector_curve_figures
from analysis.paper import paper_comparison
from analysis.plots import plot_ablation, plot_categories, plot_resources, plot_weight_histogram
from analysis.render import render_csv, render_latex, render_markdown
from analysis.seed_figures import render_markdown as seed_figures_markdown, seed_figures
from analysis.selector_weights import SELECTOR_PATH, load_selector_weights
from analysis.significance import finalize
from analysis.table_model import Table
from analysis.tables import DONE, STATUS_ORDER, ablation_table, category_table, resource_table

UNFINISHED = ("interrupted", "running", "missing")
MAX_HISTOGRAMS = 6


@dataclass
class ReportTables:
    ablations: list[Table]  # the four SEAL ablations, in SEAL.md's order
    main: Table
    memory: Table
    time: Table
    paper: Table
    categories: Table  # HEx-PHI refusal per harm category (needs per-prompt outcomes)

    def all(self) -> list[Table]:
        return [*self.ablations, self.main, self.categories, self.memory, self.time, self.paper]


def build_tables(frame: pd.DataFrame, *, prompts: pd.DataFrame | None = None,
                 reference: Mapping[str, Any] | None = None, swept: Sequence[str] | None = None) -> ReportTables:
    """Every table of the report; `reference` overrides base/reference config values (see analysis.ablations).

    prompts: per-prompt outcomes (seal_ray.results.load_prompts); without them, rates fall back to per-seed
    intervals and tests, and the per-category table is empty.
    """
    options = {"reference": reference, "swept": swept}
    ablations = [ablation_table(frame, ablation, prompts=prompts, correct=False, **options)
                 for ablation in SEAL_ABLATIONS]
    main = ablation_table(frame, MAIN_TABLE, prompts=prompts, correct=False, **options)
    finalize([*ablations, main], "this report")
    # Resources matter most for Alg 1 vs Alg 2; a sweep without that study still gets them, per cell.
    grouping = ALGORITHM_ABLATION if not ablation_rows(frame, ALGORITHM_ABLATION, **options).empty else None
    memory = resource_table(frame, "mem", grouping, **options)
    time = resource_table(frame, "time", grouping, **options)
    categories = category_table(frame, prompts, MAIN_TABLE, **options)
    return ReportTables(ablations, main, memory, time, paper_comparison(main), categories)


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = {status: 0 for status in (DONE, *STATUS_ORDER)}
    if "status" in frame.columns:
        counts.update({str(k): int(v) for k, v in frame["status"].value_counts().items()})
    return counts


def is_partial(frame: pd.DataFrame) -> bool:
    return "status" in frame.columns and frame["status"].isin(UNFINISHED).any()


def status_lines(frame: pd.DataFrame, partial: bool | None = None) -> list[str]:
    counts = status_counts(frame)
    lines = ["Runs (cell x seed): " + ", ".join(f"{count} {status}" for status, count in counts.items()) + "."]
    show_partial = is_partial(frame) if partial is None else partial
    if show_partial:
        unfinished = sum(counts.get(s, 0) for s in UNFINISHED)
        lines.insert(0, f"**Partial results**: {unfinished} of {len(frame)} runs are not finished (interrupted, running or "
                        "missing); the tables show the seeds done so far.")
    return lines


def render_tables_markdown(frame: pd.DataFrame, *, prompts: pd.DataFrame | None = None,
                           reference: Mapping[str, Any] | None = None, swept: Sequence[str] | None = None) -> str:
    """Status line and every table as markdown, for a terminal."""
    if frame.empty:
        return "No results.\n"
    tables = build_tables(frame, prompts=prompts, reference=reference, swept=swept)
    return "\n".join([*status_lines(frame), "", *(render_markdown(t) for t in tables.all())])


def selector_histograms(frame: pd.DataFrame, out_dir: Path, **options: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """One weight histogram per cell with a selector file (the activation study first), and what failed."""
    if SELECTOR_PATH not in frame.columns or "status" not in frame.columns:
        return [], []
    activation_rows = ablation_rows(frame, ACTIVATION_ABLATION, **options)
    candidates = activation_rows if not activation_rows.empty else frame
    done = (candidates["status"] == DONE).to_numpy()
    has_file = candidates[SELECTOR_PATH].map(lambda path: not is_missing(path) and str(path) != "").to_numpy()
    usable = candidates[done & has_file].sort_values("seed", kind="stable")
    first_seed = usable.drop_duplicates("cell_id" if "cell_id" in usable.columns else SELECTOR_PATH)
    figures, problems = [], []
    for index, (_, row) in enumerate(first_seed.head(MAX_HISTOGRAMS).iterrows()):
        name = f"weights_{index}.png"
        try:
            weights, labels = load_selector_weights(row)
        except (OSError, ValueError, RuntimeError) as err:  # a missing or misaligned file: say so, go on
            problems.append(f"{row.get('label')} seed {row.get('seed')}: {err}")
            continue
        title = f"Selector weights: {row.get('label')} (seed {row.get('seed')})"
        plot_weight_histogram(weights, labels, out_dir / name, title=title)
        figures.append((title, name))
    return figures, problems


def write_figures(tables: ReportTables, frame: pd.DataFrame, out_dir: Path, curves: pd.DataFrame | None = None,
                  **options: Any) -> tuple[list[tuple[str, str]], list[str]]:
    figures = []
    for table in [*tables.ablations, tables.main]:
        if table.rows:
            plot_ablation(table, out_dir / f"{table.name}.png")
            figures.append((table.title, f"{table.name}.png"))
    if tables.categories.rows and any(c.kind == "estimate" for c in tables.categories.columns):
        plot_categories(tables.categories, out_dir / "categories.png")
        figures.append((tables.categories.title, "categories.png"))
    if any(c.kind == "estimate" for c in [*tables.memory.columns, *tables.time.columns]):
        name = "resources.png"
        plot_resources(tables.memory, tables.time, out_dir / name)
        figures.append((tables.memory.title.replace("Peak memory", "Peak memory and wall time"), name))
    histograms, problems = selector_histograms(frame, out_dir, **options)
    if curves is not None:  # seal_ray.results.load_curves: the selector's training curves per ablation row
        histograms += selector_curve_figures(frame, curves, out_dir, **options)
    return figures + histograms, problems


def write_report(frame: pd.DataFrame, out_dir: str | Path, *, title: str = "SEAL ablations",
                 partial: bool | None = None, prompts: pd.DataFrame | None = None,
                 reference: Mapping[str, Any] | None = None, swept: Sequence[str] | None = None,
                 curves: pd.DataFrame | None = None) -> Path:
    """Write report.md, tables.tex, tables.csv and the PNGs into out_dir; returns report.md's path.

    partial: None decides from the statuses (any running or missing row), True/False forces the banner.
    prompts: per-prompt outcomes (seal_ray.results.load_prompts), for the intervals, tests and categories.
    curves: seal_ray.results.load_curves of the sweep, for the selector-curve plots (analysis/curves.py).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(frame, prompts=prompts, reference=reference, swept=swept)
    figures, problems = write_figures(tables, frame, out, curves, reference=reference, swept=swept)
    (out / "tables.tex").write_text(
        "% Generated by analysis.report from a seal_ray results DataFrame; needs \\usepackage{booktabs}.\n\n"
        + "\n".join(render_latex(t) for t in tables.all()))
    (out / "tables.csv").write_text(render_csv(tables.all()))
    sections = [f"# {title}", "", *status_lines(frame, partial), "", *seed_figures_markdown(seed_figures(frame)),
                "## Ablations", "",
                *(render_markdown(t) for t in tables.ablations),
                *(render_markdown(t, heading="##")
                  for t in (tables.main, tables.categories, tables.memory, tables.time, tables.paper)),
                "## Plots", ""]
    sections += [f"![{caption}]({name})\n" for caption, name in figures] or ["No plots: no cell has results.\n"]
    if problems:
        sections += ["Selector histograms not drawn:", "", *(f"- {p}" for p in problems), ""]
    report = out / "report.md"
    report.write_text("\n".join(sections))
    return report
