"""analysis.report, analysis.plots, analysis.selector_weights: files written from a constructed DataFrame."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.ablations import ACTIVATION, METHOD
from analysis.plots import plot_weight_histogram
from analysis.report import render_tables_markdown, write_report
from analysis.selector_weights import LABELS_PATH, SELECTOR_PATH, load_selector_weights, selector_weights
from analysis.synthetic import demo_results, frame, result_row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TABLE_TITLES = ["Selector activation", "Upper-level safe-set size", "Penalty schedule", "Algorithm 1 vs Algorithm 2",
                "Main table", "Peak memory: Algorithm 1 vs Algorithm 2", "Wall time: Algorithm 1 vs Algorithm 2",
                "Comparison with the paper"]


@pytest.fixture(scope="module")
def demo_frame():
    return demo_results(seeds=2)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, demo_frame):
    out = tmp_path_factory.mktemp("report")
    write_report(demo_frame, out, title="Demo")
    return out


def test_report_writes_markdown_latex_csv_and_pngs(report_dir):
    names = {p.name for p in report_dir.iterdir()}
    assert {"report.md", "tables.tex", "tables.csv", "activation.png", "safe_fraction.png", "penalty.png",
            "algorithm.png", "main.png", "resources.png"} <= names
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in report_dir.glob("*.png"))


def test_report_opens_with_the_ablations_then_main_resources_paper_plots(report_dir):
    text = (report_dir / "report.md").read_text()
    assert text.startswith("# Demo\n")
    positions = [text.index(title) for title in TABLE_TITLES] + [text.index("## Plots")]
    assert positions == sorted(positions)


def test_report_links_every_png_by_relative_path(report_dir):
    text = (report_dir / "report.md").read_text()
    for png in report_dir.glob("*.png"):
        assert f"]({png.name})" in text


def test_report_latex_holds_every_table(report_dir):
    tex = (report_dir / "tables.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == len(TABLE_TITLES)


def test_complete_results_are_not_called_partial(report_dir):
    assert "Partial results" not in (report_dir / "report.md").read_text()


@pytest.fixture
def small_frame():
    return frame([result_row({METHOD: m}, seed=s, metrics={"winrate/hh": 50.0 + s}) for m in ("sft", "seal")
                  for s in range(2)])


def test_running_or_missing_rows_make_the_report_partial(tmp_path, small_frame):
    small_frame.loc[small_frame.index[:2], "status"] = ["running", "missing"]
    text = write_report(small_frame, tmp_path).read_text()
    assert "**Partial results**: 2 of 4 runs are not finished" in text


def test_partial_can_be_forced_either_way(tmp_path, small_frame):
    assert "Partial results" in write_report(small_frame, tmp_path / "forced_on", partial=True).read_text()
    small_frame.loc[small_frame.index[0], "status"] = "running"
    assert "Partial results" not in write_report(small_frame, tmp_path / "forced_off", partial=False).read_text()


def test_render_tables_markdown_prints_every_table(demo_frame):
    text = render_tables_markdown(demo_frame)
    assert all(title in text for title in TABLE_TITLES)
    assert render_tables_markdown(pd.DataFrame()) == "No results.\n"


def test_report_of_only_failed_cells_still_lists_them(tmp_path):
    rows = [result_row({METHOD: m}, status="failed", error="boom") for m in ("sft", "seal")]
    text = write_report(frame(rows), tmp_path).read_text()
    assert "failed (boom)" in text


# --- selector weights -------------------------------------------------------------------------------

def test_selector_weights_follow_the_activation_table():
    logits = np.array([0.0, 1.0, -2.0])
    assert selector_weights(logits, "softmax").mean() == pytest.approx(1.0)
    assert selector_weights(np.zeros(3), "sigmoid") == pytest.approx([1.0, 1.0, 1.0])
    assert selector_weights(logits, "relu") == pytest.approx([0.0, 1.0, 0.0])


@pytest.fixture
def selector_row(tmp_path):
    logits = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.0, 0.0]))
    torch.save(logits, tmp_path / "selector.pt")
    (tmp_path / "labels.json").write_text(json.dumps(["clean", "unsafe", "low_quality", "clean"]))
    return {SELECTOR_PATH: str(tmp_path / "selector.pt"), LABELS_PATH: str(tmp_path / "labels.json"),
            ACTIVATION: "sigmoid", "label": "sigmoid", "seed": 0}


def test_load_selector_weights_reads_the_artifacts_of_a_row(selector_row):
    weights, labels = load_selector_weights(selector_row)
    assert weights == pytest.approx(2 / (1 + np.exp(-np.array([0.5, -0.5, 0.0, 0.0]))))
    assert list(labels) == ["clean", "unsafe", "low_quality", "clean"]


def test_load_selector_weights_refuses_misaligned_labels(selector_row, tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(["clean", "unsafe"]))
    with pytest.raises(ValueError, match="4 logits but .* 2 labels"):
        load_selector_weights(selector_row)


def test_weight_histogram_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.choice(["clean", "unsafe", "low_quality"], size=300)
    path = plot_weight_histogram(rng.normal(1.0, 0.2, 300), labels, tmp_path / "weights.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_report_draws_a_histogram_for_cells_with_a_selector_file(tmp_path, selector_row):
    row = result_row({ACTIVATION: "sigmoid"}, metrics={"winrate/hh": 55.0, **selector_row})
    text = write_report(frame([row]), tmp_path / "out").read_text()
    assert "](weights_0.png)" in text
    assert (tmp_path / "out" / "weights_0.png").is_file()


def test_analysis_imports_neither_ray_nor_seal_ray():
    code = ("import sys, analysis.report, analysis.synthetic; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'seal_ray'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_one_holm_family_spans_every_table_of_the_report():
    from analysis.ablations import ACTIVATION_ABLATION
    from analysis.report import build_tables
    from analysis.significance import tested
    from analysis.tables import ablation_table

    results = demo_results(seeds=3)
    tables = build_tables(results)
    compared = [*tables.ablations, tables.main]
    comparisons = len(tested(compared))
    assert comparisons > len(tested([tables.ablations[0]]))
    assert all(any(f"over the {comparisons} comparisons of this report" in note for note in t.notes) for t in compared)
    alone = ablation_table(results, ACTIVATION_ABLATION)
    for (_, row, column, cell) in tested([tables.ablations[0]]):
        assert cell.test.p_adjusted >= alone.cell(row.label, column.key).test.p_adjusted


def test_report_sentences_name_only_differences_that_pass_the_corrected_test():
    from analysis.report import build_tables
    from analysis.significance import tested

    tables = build_tables(demo_results(seeds=3))
    compared = [*tables.ablations, tables.main]
    claimed = 0
    for table, row, column, cell in tested(compared):
        name = column.header.split(" (")[0]
        said = [s for s in table.findings if s.startswith(f"{row.label} vs ")
                and (f"{name} higher by" in s or f"{name} lower by" in s)]
        assert len(said) == (1 if cell.test.significant() else 0), (table.name, row.label, name, cell.test)
        claimed += len(said)
    assert claimed, "the demo numbers should leave some difference significant"


def test_report_with_prompts_has_the_category_table_and_plot(tmp_path):
    from analysis.synthetic import demo_prompts

    results = demo_results(seeds=3)
    report = write_report(results, tmp_path, prompts=demo_prompts(results)).read_text()
    assert "## HEx-PHI refusal by harm category" in report
    assert (tmp_path / "categories.png").read_bytes()[:8] == PNG_MAGIC
    assert "clustered bootstrap" in report
