"""analysis.paper: our main table beside the paper's Llama-3 numbers, and the direction of each effect."""

import pytest

from analysis.ablations import MAIN_TABLE, METHOD
from analysis.paper import PAPER_LLAMA3, paper_comparison
from analysis.synthetic import frame, result_row
from analysis.tables import ablation_table


def main_table(win_rates):
    """win_rates: method -> hh values per seed; orca 51, 53, 55 and hexphi 52 for every method."""
    rows = [result_row({METHOD: method}, seed=seed, metrics={"winrate/hh": hh, "winrate/orca": 51.0 + 2 * seed,
                                                             "winrate/hexphi": 52.0, "safety/refusal_rate": 0.3})
            for method, values in win_rates.items() for seed, hh in enumerate(values)]
    return ablation_table(frame(rows), MAIN_TABLE)


@pytest.fixture
def comparison():
    return paper_comparison(main_table({"sft": [50.0] * 3, "random": [47.0, 48.0, 46.5], "seal": [58.0, 60.0, 59.0],
                                        "oracle": [61.0, 62.0, 63.0]}))


def test_paper_numbers_are_those_of_seal_md(comparison):
    assert comparison.cell("SEAL", "hexphi/paper").estimate.mean == 69.29
    assert comparison.cell("SEAL + SafeInstr", "hh/paper").estimate.mean == 67.19
    assert [row.keys[METHOD] for row in comparison.rows][:6] == list(PAPER_LLAMA3)


def test_our_value_sits_next_to_the_paper_value(comparison):
    assert comparison.cell("SEAL", "hh/ours").estimate.mean == pytest.approx(59.0)
    assert comparison.cell("Random selection", "hh/ours").estimate.n == 3


def test_direction_agrees_or_not_only_where_our_interval_excludes_50(comparison):
    assert comparison.cell("SEAL", "hh/agrees").text == "yes"
    assert comparison.cell("Random selection", "hh/agrees").text == "no"  # ours below 50, the paper's above
    # 51, 53, 55: 53 +- 4.97 spans 50, so the (agreeing) direction is not established.
    assert comparison.cell("SEAL", "orca/agrees").text == "not established (interval spans 50)"
    assert comparison.cell("Standard SFT", "hh/agrees").text == "reference"


def test_two_seeds_establish_no_direction():
    two_seeds = paper_comparison(main_table({"sft": [50.0] * 2, "seal": [70.0, 71.0]}))
    assert two_seeds.cell("SEAL", "hh/agrees").text == "not established (no interval)"


def test_methods_not_run_or_not_in_the_paper_are_said_so(comparison):
    assert comparison.cell("DSIR", "hh/ours").text == "not run"
    assert comparison.cell("DSIR", "hh/agrees").text == "n/a"
    assert comparison.cell("Oracle (clean data)", "hh/paper").text == "not in paper"


def test_summary_counts_agreeing_methods_per_column(comparison):
    assert ("HH: direction agrees for 1 of 2 methods whose interval excludes 50 (disagrees: Random selection); "
            "not established for 0." in comparison.notes)
    assert ("SlimOrca: direction agrees for 0 of 0 methods whose interval excludes 50; not established for 2 "
            "(Random selection, SEAL)." in comparison.notes)
