"""analysis.ablations + analysis.tables: which rows form each ablation, and the numbers in each cell."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.ablations import (
    ACTIVATION, ACTIVATION_ABLATION, ALGORITHM, ALGORITHM_ABLATION, MAIN_TABLE, METHOD, PENALTY_ABLATION,
    PENALTY_DECAY, PENALTY_GAMMA, PENALTY_KIND, SAFE_FRACTION, SAFE_FRACTION_ABLATION, SAFE_FRACTION_UNIT,
    SELECTOR_EPOCH, ablation_rows, swept_columns)
from analysis.render import render_latex, render_markdown
from analysis.synthetic import frame, result_row
from analysis.tables import ablation_table, resource_table

REF_HH = [50.0, 52.0, 54.0]
SIGMOID_HH = [60.0, 62.5, 63.8]  # reference + 10, 10.5, 9.8: a clear paired shift
RELU_HH = [53.0, 48.0, 55.5]  # reference + 3, -4, 1.5: noise


def metrics(hh, orca=50.0, hexphi=50.0, refusal=0.5, **extra):
    return {"winrate/hh": hh, "winrate/orca": orca, "winrate/hexphi": hexphi, "safety/refusal_rate": refusal,
            **extra}


def cell(changes, hh_by_seed, **kwargs):
    return [result_row(changes, seed=seed, metrics=metrics(hh), **kwargs) for seed, hh in enumerate(hh_by_seed)]


def hand_ci(values):
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return np.mean(values) - half, np.mean(values) + half


@pytest.fixture
def activation_frame():
    return frame(cell({}, REF_HH) + cell({ACTIVATION: "sigmoid"}, SIGMOID_HH) + cell({ACTIVATION: "relu"}, RELU_HH))


@pytest.fixture
def demo_like_frame():
    """Every study of sweeps/demo.yaml around one base cell, one seed each."""
    changes = [{}, {ACTIVATION: "sigmoid"}, {SAFE_FRACTION: 0.5}, {PENALTY_KIND: "fixed", PENALTY_GAMMA: 0.1},
               {PENALTY_DECAY: 0.1}, {ALGORITHM: 1}, {METHOD: "sft"}, {METHOD: "random"}, {METHOD: "oracle"},
               {METHOD: "dsir"}, {METHOD: "my_method"}]
    return frame([result_row(c, metrics=metrics(55.0)) for c in changes])


def labels(table):
    return [row.label for row in table.rows]


# --- which rows ---------------------------------------------------------------------------------------

def test_swept_columns_are_the_config_columns_that_vary_except_the_seed(demo_like_frame):
    assert set(swept_columns(demo_like_frame)) == {
        METHOD, ACTIVATION, SAFE_FRACTION, PENALTY_KIND, PENALTY_GAMMA, PENALTY_DECAY, ALGORITHM}


def test_activation_ablation_takes_only_seal_cells_that_differ_in_activation(demo_like_frame):
    table = ablation_table(demo_like_frame, ACTIVATION_ABLATION)
    assert labels(table) == ["softmax", "sigmoid"]
    assert table.row("softmax").is_reference


def test_safe_fraction_labels_carry_the_unit(demo_like_frame):
    rows = frame([result_row({SAFE_FRACTION: 0.1, SAFE_FRACTION_UNIT: "safe_pool"})])
    table = ablation_table(pd.concat([demo_like_frame, rows]), SAFE_FRACTION_ABLATION)
    assert labels(table) == ["10% of safe pool", "20% of D_ft", "50% of D_ft"]
    assert table.row("20% of D_ft").is_reference


def test_safe_fraction_table_names_the_selector_epoch_rule_its_rows_ran_under(demo_like_frame):
    table = ablation_table(demo_like_frame, SAFE_FRACTION_ABLATION)
    assert table.notes[0] == ("Selector epoch rule (selector.epoch): cycle_safe (an epoch is one pass over D_ft, "
                              "the safe set cycled beside it).")
    assert "Selector epoch rule (selector.epoch): cycle_safe" in render_markdown(table)
    assert r"Selector epoch rule (selector.epoch): cycle\_safe" in render_latex(table)
    assert not any("epoch" in note for note in ablation_table(demo_like_frame, ACTIVATION_ABLATION).notes)


def test_safe_fraction_rows_under_different_epoch_rules_each_name_theirs(demo_like_frame):
    zipped = frame([result_row({SAFE_FRACTION: 0.1, SELECTOR_EPOCH: "zip_shortest"})])
    table = ablation_table(pd.concat([demo_like_frame, zipped]), SAFE_FRACTION_ABLATION,
                           swept=[METHOD, SAFE_FRACTION, SAFE_FRACTION_UNIT])
    assert [row.cells[SELECTOR_EPOCH].text for row in table.rows] == ["zip_shortest", "cycle_safe", "cycle_safe"]
    assert table.columns[1].header == "Selector epoch rule"
    assert table.notes[0].startswith("Selector epoch rule (selector.epoch), per row in its column: cycle_safe (")
    assert "; zip_shortest (the reference code's zip(safe, ft)" in table.notes[0]


def test_safe_fraction_results_from_before_the_epoch_field_say_it_is_not_recorded(demo_like_frame):
    table = ablation_table(demo_like_frame.drop(columns=[SELECTOR_EPOCH]), SAFE_FRACTION_ABLATION)
    assert table.notes[0] == "Selector epoch rule (selector.epoch): not recorded."


def test_penalty_labels_show_the_parameter_the_schedule_uses(demo_like_frame):
    table = ablation_table(demo_like_frame, PENALTY_ABLATION)
    assert labels(table) == ["ramp (decay 0.03)", "ramp (decay 0.1)", "fixed gamma=0.1"]
    assert [r.is_reference for r in table.rows] == [True, False, False]


def test_algorithm_ablation_reference_is_algorithm_2(demo_like_frame):
    table = ablation_table(demo_like_frame, ALGORITHM_ABLATION)
    assert labels(table) == ["Alg. 1 (auxiliary model)", "Alg. 2 (memory-efficient)"]
    assert table.row("Alg. 2 (memory-efficient)").is_reference


def test_main_table_orders_methods_and_puts_unknown_ones_last(demo_like_frame):
    table = ablation_table(demo_like_frame, MAIN_TABLE)
    assert labels(table) == ["Standard SFT", "Random", "DSIR", "SEAL", "Oracle (clean data)", "my_method"]
    assert table.row("Standard SFT").is_reference


def test_reference_override_moves_the_base_and_the_reference(demo_like_frame):
    # A sweep built around sigmoid: its penalty study runs at sigmoid, so the softmax cells drop out of it.
    sigmoid_penalty = frame([result_row({ACTIVATION: "sigmoid", PENALTY_KIND: "fixed", PENALTY_GAMMA: 0.1})])
    data = pd.concat([demo_like_frame, sigmoid_penalty])
    override = {ACTIVATION: "sigmoid"}
    activation = ablation_table(data, ACTIVATION_ABLATION, reference=override)
    assert [r.label for r in activation.rows if r.is_reference] == ["sigmoid"]
    penalty_rows = ablation_rows(data, PENALTY_ABLATION, reference=override)
    assert set(penalty_rows[ACTIVATION]) == {"sigmoid"}
    assert len(penalty_rows) == 2


def test_swept_argument_limits_the_columns_compared(activation_frame):
    # A grid column the caller chooses to ignore: without `swept`, the topp=0.7 cell is no activation cell.
    data = pd.concat([activation_frame, frame(cell({ACTIVATION: "relu", "config/selection.topp": 0.7}, [40.0]))])
    assert len(ablation_rows(data, ACTIVATION_ABLATION)) == 9
    assert len(ablation_rows(data, ACTIVATION_ABLATION, swept=[ACTIVATION, METHOD])) == 10


# --- numbers ------------------------------------------------------------------------------------------

def test_cell_mean_ci_and_n_match_the_hand_formula(activation_frame):
    estimate = ablation_table(activation_frame, ACTIVATION_ABLATION).cell("sigmoid", "winrate/hh").estimate
    low, high = hand_ci(SIGMOID_HH)
    assert estimate.mean == pytest.approx(np.mean(SIGMOID_HH))
    assert (estimate.ci_low, estimate.ci_high, estimate.n) == (pytest.approx(low), pytest.approx(high), 3)


def test_refusal_rate_is_shown_in_percent(activation_frame):
    estimate = ablation_table(activation_frame, ACTIVATION_ABLATION).cell("softmax", "safety/refusal_rate").estimate
    assert estimate.mean == pytest.approx(50.0)


def test_clear_paired_shift_gets_two_stars_and_noise_none(activation_frame):
    table = ablation_table(activation_frame, ACTIVATION_ABLATION)
    sigmoid, relu = table.cell("sigmoid", "winrate/hh"), table.cell("relu", "winrate/hh")
    assert sigmoid.test.p_value == pytest.approx(stats.ttest_rel(SIGMOID_HH, REF_HH).pvalue)
    assert sigmoid.mark == "**"
    assert relu.test.p_value == pytest.approx(stats.ttest_rel(RELU_HH, REF_HH).pvalue)
    assert relu.mark == ""
    assert table.cell("softmax", "winrate/hh").test is None


def test_pairs_use_only_seeds_present_in_both_cells(activation_frame):
    extra_seed = frame([result_row({ACTIVATION: "sigmoid"}, seed=7, metrics=metrics(99.0))])
    table = ablation_table(pd.concat([activation_frame, extra_seed]), ACTIVATION_ABLATION)
    cell_ = table.cell("sigmoid", "winrate/hh")
    assert (cell_.estimate.n, cell_.test.pairs) == (4, 3)
    assert cell_.test.diff == pytest.approx(np.mean(np.subtract(SIGMOID_HH, REF_HH)))


def test_bold_marks_only_rows_significantly_better_than_the_reference_after_holm(activation_frame):
    table = ablation_table(activation_frame, ACTIVATION_ABLATION)
    assert [table.cell(label, "winrate/hh").bold for label in labels(table)] == [False, True, False]
    # Equal orca win rates everywhere: the highest mean is no reason for bold.
    assert not any(table.cell(label, "winrate/orca").bold for label in labels(table))
    sigmoid = table.cell("sigmoid", "winrate/hh").test
    comparisons = sum(cell.test is not None for row in table.rows for cell in row.cells.values())
    assert sigmoid.p_adjusted == pytest.approx(min(1.0, comparisons * sigmoid.p_value))  # the smallest p: Bonferroni


def test_a_significantly_worse_row_is_not_bold_and_lower_is_better_where_the_metric_says_so():
    over_refusal = {0: [0.30, 0.31, 0.29], 1: [0.10, 0.12, 0.11]}  # reference, then a row refusing less
    rows = [result_row({ACTIVATION: activation}, seed=seed, metrics=metrics(hh, **{"safety/over_refusal_rate": over}))
            for activation, hhs, overs in (("softmax", REF_HH, over_refusal[0]), ("sigmoid", [40.0, 42.5, 43.8],
                                                                                   over_refusal[1]))
            for seed, (hh, over) in enumerate(zip(hhs, overs))]
    table = ablation_table(frame(rows), ACTIVATION_ABLATION)
    worse = table.cell("sigmoid", "winrate/hh")
    assert worse.test.significant() and worse.test.diff < 0 and not worse.bold
    better = table.cell("sigmoid", "safety/over_refusal_rate")
    assert better.test.significant() and better.test.diff < 0 and better.bold


def test_nan_metric_in_some_seeds_is_left_out_and_two_seeds_show_their_values(activation_frame):
    data = activation_frame.copy()
    data.loc[(data[ACTIVATION] == "relu") & (data["seed"] == 1), "winrate/hh"] = float("nan")
    cell_ = ablation_table(data, ACTIVATION_ABLATION).cell("relu", "winrate/hh")
    assert (cell_.estimate.mean, cell_.estimate.n) == (pytest.approx(54.25), 2)
    assert cell_.estimate.seed_values == (53.0, 55.5) and not cell_.estimate.has_interval
    assert cell_.note == "n=2"
    assert cell_.test is None  # no p-value from 2 seeds


def test_one_seed_cell_has_no_ci_and_no_test(activation_frame):
    data = pd.concat([activation_frame, frame(cell({ACTIVATION: "sigmoid", SAFE_FRACTION: 0.5}, [58.0]))])
    table = ablation_table(data, SAFE_FRACTION_ABLATION)
    cell_ = table.cell("50% of D_ft", "winrate/hh")
    assert (cell_.estimate.mean, cell_.estimate.ci_low, cell_.estimate.n) == (58.0, None, 1)
    assert cell_.test is None
    assert table.row("50% of D_ft").cells["n"].text == "1"


def test_failed_cell_shows_its_reason(activation_frame):
    failed = [result_row({SAFE_FRACTION: 0.5}, seed=s, status="failed",
                         error="RuntimeError: CUDA out of memory\n  Traceback ...") for s in range(3)]
    table = ablation_table(pd.concat([activation_frame, frame(failed)]), SAFE_FRACTION_ABLATION)
    row = table.row("50% of D_ft")
    assert row.cells["winrate/hh"].estimate is None
    assert row.cells["winrate/hh"].text == "failed (RuntimeError: CUDA out of memory)"
    assert row.cells["n"].text == "0"
    assert row.cells["notes"].text == "failed: seed 0, 1, 2 (RuntimeError: CUDA out of memory)"


def test_missing_and_running_cells_are_listed_not_dropped(activation_frame):
    pending = [result_row({PENALTY_KIND: "fixed", PENALTY_GAMMA: 0.5}, seed=0, status="missing"),
               result_row({PENALTY_DECAY: 0.1}, seed=0, status="running")]
    table = ablation_table(pd.concat([activation_frame, frame(pending)]), PENALTY_ABLATION)
    assert table.cell("fixed gamma=0.5", "winrate/hh").text == "missing"
    assert table.cell("ramp (decay 0.1)", "winrate/hh").text == "running"


def test_partly_done_cell_counts_done_seeds_and_notes_the_rest(activation_frame):
    data = activation_frame.copy()
    data.loc[(data[ACTIVATION] == "relu") & (data["seed"] == 2), "status"] = "running"
    table = ablation_table(data, ACTIVATION_ABLATION)
    assert table.cell("relu", "winrate/hh").estimate.n == 2
    assert table.row("relu").cells["n"].text == "2"
    assert table.row("relu").cells["notes"].text == "running: seed 2"


def test_done_cell_without_the_metric_shows_na(activation_frame):
    data = activation_frame.assign(**{"selector/auroc_unsafe": 0.9})
    data.loc[data[ACTIVATION] == "relu", "selector/auroc_unsafe"] = float("nan")
    table = ablation_table(data, ACTIVATION_ABLATION)
    assert table.cell("relu", "selector/auroc_unsafe").text == "n/a"
    assert table.cell("softmax", "selector/auroc_unsafe").estimate.mean == pytest.approx(0.9)


def test_selector_columns_appear_only_where_measured(activation_frame):
    keys = [c.key for c in ablation_table(activation_frame, ACTIVATION_ABLATION).columns]
    assert "selector/auroc_unsafe" not in keys
    with_selector = activation_frame.assign(**{"selector/dropped_unsafe_share": 0.4})
    keys = [c.key for c in ablation_table(with_selector, ACTIVATION_ABLATION).columns]
    assert "selector/dropped_unsafe_share" in keys


# --- resources ----------------------------------------------------------------------------------------

def resource_metrics(selector_mb, seconds, device="cuda"):
    return {"mem/base_peak_mb": 100.0, "mem/selector_peak_mb": selector_mb, "time/selector_s": seconds,
            "time/finetune_s": 5.0, "prov/device": device}


def test_memory_table_has_stages_from_columns_device_and_ci():
    rows = [result_row({ALGORITHM: algorithm}, seed=seed, metrics=resource_metrics(mb, 10.0 * algorithm))
            for algorithm, mbs in ((1, [300.0, 310.0, 320.0]), (2, [150.0, 150.0, 153.0]))
            for seed, mb in enumerate(mbs)]
    table = resource_table(frame(rows), "mem")
    assert [c.key for c in table.columns] == ["n", "device", "mem/base_peak_mb", "mem/selector_peak_mb"]
    assert table.cell("Alg. 1 (auxiliary model)", "device").text == "cuda"
    assert "cuda" in table.caption and "max_memory_allocated" in table.caption
    estimate = table.cell("Alg. 1 (auxiliary model)", "mem/selector_peak_mb").estimate
    low, high = hand_ci([300.0, 310.0, 320.0])
    assert (estimate.mean, estimate.ci_low, estimate.ci_high) == (310.0, pytest.approx(low), pytest.approx(high))


def test_time_table_orders_stages_as_the_pipeline_runs():
    rows = [result_row({ALGORITHM: a}, metrics=resource_metrics(1.0, 2.0)) for a in (1, 2)]
    table = resource_table(frame(rows), "time")
    assert [c.header for c in table.columns if c.kind == "estimate"] == ["selector (s)", "finetune (s)"]


def test_resource_table_without_ablation_groups_every_cell_by_label(activation_frame):
    data = activation_frame.assign(**{"time/finetune_s": 4.0, "prov/device": "cpu"})
    table = resource_table(data, "time", None)
    assert labels(table) == ["reference", "selector.activation=relu", "selector.activation=sigmoid"]
    assert table.cell("reference", "device").text == "cpu"


# --- per-prompt outcomes, extra methods and metrics, categories ------------------------------------------

@pytest.fixture(scope="module")
def with_prompts():
    from analysis.synthetic import demo_prompts, demo_results

    results = demo_results(seeds=3)
    return results, demo_prompts(results)


def _outcomes(prompts, results, changes, test_set, column):
    cell_id = result_row(changes)["cell_id"]
    rows = prompts[(prompts["cell_id"] == cell_id) & (prompts["test_set"] == test_set)]
    return {int(seed): part.set_index("prompt_key")[column] for seed, part in rows.groupby("seed")}


def test_rates_use_the_clustered_bootstrap_and_per_prompt_paired_tests(with_prompts):
    from analysis.stats import clustered_bootstrap, clustered_paired_test

    results, prompts = with_prompts
    cell_ = ablation_table(results, ACTIVATION_ABLATION, prompts=prompts).cell("sigmoid", "winrate/hexphi")
    mine = _outcomes(prompts, results, {ACTIVATION: "sigmoid"}, "hexphi", "win")
    reference = _outcomes(prompts, results, {}, "hexphi", "win")
    expected = clustered_bootstrap({s: v.to_numpy() for s, v in mine.items()}, 100.0, (0.0, 100.0))
    assert cell_.estimate.method == "bootstrap"
    assert (cell_.estimate.ci_low, cell_.estimate.ci_high) == (expected.ci_low, expected.ci_high)
    test = clustered_paired_test({s: (mine[s] - reference[s]).to_numpy() for s in mine}, 100.0)
    assert cell_.test.level == "prompt" and cell_.test.p_value == pytest.approx(test.p_value)
    refusal = ablation_table(results, ACTIVATION_ABLATION, prompts=prompts).cell("sigmoid", "safety/refusal_rate")
    assert refusal.estimate.method == "bootstrap" and 0 <= refusal.estimate.ci_low <= refusal.estimate.ci_high <= 100


def test_a_cell_missing_prompts_for_a_seed_falls_back_to_its_seed_values(with_prompts):
    results, prompts = with_prompts
    sigmoid = result_row({ACTIVATION: "sigmoid"})["cell_id"]
    partial = prompts[~((prompts["cell_id"] == sigmoid) & (prompts["seed"] == 2))]
    cell_ = ablation_table(results, ACTIVATION_ABLATION, prompts=partial).cell("sigmoid", "winrate/hh")
    assert cell_.estimate.method == "t" and cell_.test.level == "seed"


def test_new_methods_and_metrics_show_up_without_code_changes():
    extra = {"safety/over_refusal_rate": 0.1, "safety/refusal_logprob_margin": 1.5}
    rows = [result_row({METHOD: method}, seed=seed, metrics=metrics(55.0 + seed, **extra))
            for method in ("sft", "dsir", "safeinstr", "seal_safeinstr", "seal") for seed in range(3)]
    table = ablation_table(frame(rows), MAIN_TABLE)
    assert labels(table) == ["Standard SFT", "DSIR", "SafeInstr", "SEAL", "SEAL + SafeInstr"]
    keys = [c.key for c in table.columns]
    assert "safety/over_refusal_rate" in keys and "safety/refusal_logprob_margin" in keys
    assert not table.column("safety/over_refusal_rate").higher_is_better


def test_category_table_gives_each_harm_category_an_interval_within_range(with_prompts):
    from analysis.synthetic import HARM_CATEGORIES
    from analysis.tables import category_table

    results, prompts = with_prompts
    table = category_table(results, prompts)
    assert [c.header for c in table.columns if c.kind == "estimate"] == list(HARM_CATEGORIES)
    assert labels(table)[0] == "Standard SFT"
    estimates = [cell.estimate for row in table.rows for cell in row.cells.values() if cell.estimate]
    assert len(estimates) == len(table.rows) * len(HARM_CATEGORIES)
    assert all(e.method == "bootstrap" and 0.0 <= e.ci_low <= e.mean <= e.ci_high <= 100.0 for e in estimates)
    assert category_table(results, None).rows == []


def test_prompts_of_seeds_outside_the_frame_do_not_enter_the_intervals():
    """A seed retired by --seeds keeps its prompt outcomes in storage; a row that counts 3 seeds must
    bootstrap those 3 seeds only (same cells, same prompts frame, the 4th seed left out of the results)."""
    from analysis.report import build_tables
    from analysis.synthetic import demo_prompts, demo_results

    results = demo_results(seeds=4)
    prompts = demo_prompts(results)
    three = results[results["seed"] < 3].reset_index(drop=True)
    with_retired = build_tables(three, prompts=prompts)
    without = build_tables(three, prompts=prompts[prompts["seed"] < 3])
    assert render_markdown(with_retired.main) == render_markdown(without.main)
    assert all(render_markdown(a) == render_markdown(b) for a, b in zip(with_retired.ablations, without.ablations))
