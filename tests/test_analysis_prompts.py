"""Per-prompt outcomes: the judge stage keeps them, results.load_prompts reads them back (no Ray)."""

from pathlib import Path

import numpy as np
import pytest

from analysis.synthetic import PROMPT_COLUMNS as SYNTHETIC_COLUMNS
from seal_ray.results import PROMPT_COLUMNS, load, load_prompts, sweep_folder
from seal_ray.sweep import _write_manifest, plan, run_cell_entry
from seal_ray.sweep_spec import load_sweep

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_storage(tmp_path_factory):
    """The smoke sweep's SEAL reference cell and its Standard SFT baseline, one seed, run inline."""
    storage = tmp_path_factory.mktemp("storage")
    spec = load_sweep(SMOKE)
    spec.cells = [c for c in spec.cells if c.label in ("reference", "method=sft")]
    folder = sweep_folder(storage, spec.name)
    sweep_plan = plan(spec, folder)
    _write_manifest(folder, sweep_plan.manifest)  # as `sweep run` does before its trials
    for key in sweep_plan.pending:
        run_cell_entry(sweep_plan.table[key], str(storage), folder)
    return storage


def test_per_prompt_outcomes_reproduce_the_recorded_rates(smoke_storage):
    frame = load("smoke", smoke_storage)
    prompts = load_prompts("smoke", smoke_storage)
    assert list(prompts.columns) == list(PROMPT_COLUMNS) == list(SYNTHETIC_COLUMNS)
    assert set(frame["status"]) == {"done"}
    for _, row in frame.iterrows():
        mine = prompts[(prompts["cell_id"] == row["cell_id"]) & (prompts["seed"] == row["seed"])]
        for test_set in ("hh", "orca", "hexphi"):
            wins = mine.loc[mine["test_set"] == test_set, "win"]
            assert 100 * np.nanmean(wins) == pytest.approx(row[f"winrate/{test_set}"])
        hexphi = mine[mine["test_set"] == "hexphi"]
        assert hexphi["refused"].mean() == pytest.approx(row["safety/refusal_rate"])
        assert hexphi["category"].nunique() == 11  # one prompt per harm category in the smoke world
        xstest = mine[mine["test_set"] == "xstest"]  # benign look-alikes: refusals only, never judged pairwise
        assert len(xstest) > 0 and xstest["win"].isna().all()
        assert xstest["refused"].mean() == pytest.approx(row["safety/over_refusal_rate"])
        assert mine.loc[mine["test_set"].isin(["hh", "orca"]), "refused"].isna().all()


def test_the_same_prompt_has_the_same_key_in_every_cell_of_a_seed(smoke_storage):
    prompts = load_prompts("smoke", smoke_storage)
    keys = prompts.groupby("cell_id")["prompt_key"].apply(lambda k: tuple(sorted(k)))
    assert keys.nunique() == 1 and len(keys) == 2


def test_a_cell_without_prompt_outcomes_is_left_out_not_an_error(smoke_storage):
    for stale in (smoke_storage / "stages" / "judge").glob("*/prompts.json"):
        stale.rename(stale.with_suffix(".bak"))
    try:
        empty = load_prompts("smoke", smoke_storage)
        assert empty.empty and list(empty.columns) == list(PROMPT_COLUMNS)
    finally:
        for kept in (smoke_storage / "stages" / "judge").glob("*/prompts.bak"):
            kept.rename(kept.with_suffix(".json"))
