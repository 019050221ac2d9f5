"""analysis.render: the markdown, LaTeX and CSV forms of one table model."""

import io
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.ablations import ACTIVATION, ACTIVATION_ABLATION, SAFE_FRACTION, SAFE_FRACTION_ABLATION
from analysis.render import render_csv, render_latex, render_markdown
from analysis.synthetic import frame, result_row
from analysis.tables import ablation_table

REF_HH = [50.0, 52.0, 54.0]
SIGMOID_HH = [60.0, 62.5, 63.8]


def metrics(hh):
    return {"winrate/hh": hh, "winrate/orca": 50.0, "winrate/hexphi": 50.0, "safety/refusal_rate": 0.5}


@pytest.fixture
def table():
    rows = [result_row(changes, seed=seed, metrics=metrics(hh))
            for changes, values in (({}, REF_HH), ({ACTIVATION: "sigmoid"}, SIGMOID_HH))
            for seed, hh in enumerate(values)]
    rows.append(result_row({ACTIVATION: "relu"}, seed=0, status="failed", error="ValueError: bad_logits | NaN"))
    return ablation_table(frame(rows), ACTIVATION_ABLATION)


def half_width(values):
    return stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))


def interval(values):
    mean, half = np.mean(values), half_width(values)
    return f"[{mean - half:.2f}, {mean + half:.2f}]"


def test_markdown_bolds_the_significant_row_and_escapes_its_significance_mark(table):
    text = render_markdown(table)
    assert f"**62.10\\*\\*** {interval(SIGMOID_HH)}" in text
    assert f"| 52.00 {interval(REF_HH)}" in text


def test_markdown_marks_a_clipped_interval():
    rows = [result_row({}, seed=seed, metrics={**metrics(50.0), "selector/auroc_unsafe": auroc})
            for seed, auroc in enumerate([0.99, 0.70, 0.98])]
    text = render_markdown(ablation_table(frame(rows), ACTIVATION_ABLATION))
    assert "0.890 [" in text and ", 1.000] (clipped)" in text


def test_markdown_marks_the_reference_row_and_shows_failed_cells(table):
    text = render_markdown(table)
    assert "| softmax (reference) |" in text
    assert "failed (ValueError: bad_logits \\| NaN)" in text  # the pipe is escaped, the row keeps its columns
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in lines}) == 1


def test_markdown_below_three_seeds_shows_the_per_seed_values():
    rows = [result_row({SAFE_FRACTION: 0.5}, seed=0, metrics=metrics(58.0))]
    text = render_markdown(ablation_table(frame(rows), SAFE_FRACTION_ABLATION))
    assert "58.00 (seed 58.00)" in text
    rows.append(result_row({SAFE_FRACTION: 0.5}, seed=1, metrics=metrics(61.0)))
    assert "59.50 (seeds 58.00, 61.00)" in render_markdown(ablation_table(frame(rows), SAFE_FRACTION_ABLATION))


def test_markdown_of_an_empty_study_says_so():
    only_sft = frame([result_row({"config/selection.method": "sft"}, metrics=metrics(50.0))])
    assert "No cells of this study in the results." in render_markdown(ablation_table(only_sft, SAFE_FRACTION_ABLATION))


def test_latex_uses_booktabs_rules_in_order(table):
    text = render_latex(table)
    positions = [text.index(rule) for rule in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule",
                                               r"\end{tabular}")]
    assert positions == sorted(positions)
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 1


def test_latex_braces_balance_and_specials_are_escaped(table):
    text = render_latex(table)
    assert text.count("{") - text.count(r"\{") == text.count("}") - text.count(r"\}")
    assert not re.search(r"(?<!\\)_", text), "unescaped underscore"
    assert not re.search(r"(?<!\\)%", text), "unescaped percent"
    assert r"bad\_logits" in text and r"win rate (\%)" in text


def test_latex_bold_and_mark_use_textbf_and_superscript(table):
    text = render_latex(table)
    assert rf"\textbf{{62.10}}\textsuperscript{{**}} {interval(SIGMOID_HH)}" in text


def test_latex_rows_have_as_many_cells_as_the_column_spec(table):
    text = render_latex(table)
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1)
    body = text[text.index(r"\toprule"): text.index(r"\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert rows and all(len(re.split(r"(?<!\\)&", row)) == len(spec) for row in rows)


def test_csv_has_numbers_in_separate_columns(table):
    csv = pd.read_csv(io.StringIO(render_csv([table])))
    row = csv[(csv["row"] == "sigmoid") & (csv["column"] == "winrate/hh")].iloc[0]
    low = np.mean(SIGMOID_HH) - half_width(SIGMOID_HH)
    assert row["mean"] == pytest.approx(62.1)
    assert row["ci_low"] == pytest.approx(low)
    assert row["ci_high"] == pytest.approx(62.1 * 2 - low)
    assert row["n"] == 3
    assert row["p_value"] == pytest.approx(stats.ttest_rel(SIGMOID_HH, REF_HH).pvalue)
    assert row["p_holm"] >= row["p_value"]
    assert row["interval"] == "t" and not row["clipped"]
    assert row["mark"] == "**" and bool(row["bold"])


def test_csv_keeps_failed_cells_as_text(table):
    csv = pd.read_csv(io.StringIO(render_csv([table])), keep_default_na=False)
    row = csv[(csv["row"] == "relu") & (csv["column"] == "winrate/hh")].iloc[0]
    assert row["text"] == "failed (ValueError: bad_logits | NaN)"
    assert row["mean"] == ""
