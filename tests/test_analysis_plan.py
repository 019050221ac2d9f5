"""`seal-ray plan`: runs, compute from the stage cache, and seeds needed from earlier results (no Ray)."""

import re
from pathlib import Path

import numpy as np
import pytest

from analysis.power import study_noise
from analysis.stats import ALPHA, seeds_needed
from seal_ray.cli import main
from seal_ray.results import load, sweep_folder, write_record
from seal_ray.store import MARKER, StageStore, write_json_atomic
from seal_ray.sweep import _write_manifest, plan
from seal_ray.sweep_spec import load_sweep

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"
HH = {"reference": [50.0, 52.0, 54.0], "activation=sigmoid": [60.0, 62.5, 63.8], "method=sft": [50.0, 50.0, 50.0]}


def run_plan(capsys, *args):
    code = main(["plan", str(SMOKE), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_without_earlier_results_prints_the_compute_plan_and_asks_for_a_pilot(tmp_path, capsys):
    code, out, _ = run_plan(capsys, "--storage", str(tmp_path), "--detect", "5")
    assert code == 0
    assert "Sweep 'smoke'" in out and "3 cells x 1 seeds = 3 runs" in out
    # One data and base stage for the seed, a selector per activation, the SFT reference once.
    assert "Stages to compute: 1 base, 1 data, 3 finetune, 3 generate, 3 judge, 3 select, 2 selector" in out
    assert "Estimated compute: unknown, this cache holds no earlier timing" in out and "run a pilot" in out
    assert not (tmp_path / "sweeps").exists()  # planning writes nothing


def test_plan_counts_cached_stages_as_free_and_times_the_rest_from_the_cache(tmp_path, capsys):
    store = StageStore(tmp_path)
    for stage, hashes, seconds in (("base", ["b1", "b2", "b3"], [10.0, 30.0, 20.0]),):
        for key_hash, value in zip(hashes, seconds):
            folder = store.stage_dir(stage, key_hash)
            folder.mkdir(parents=True)
            write_json_atomic(folder / MARKER, {"stage": stage, "hash": key_hash, "seconds": value})
    _, out, _ = run_plan(capsys, "--storage", str(tmp_path))
    assert "about 20 s of stage time" in out  # the median base time; every other stage has no timing yet
    assert "no earlier timing in this cache: data, finetune, generate, judge, select, selector" in out


@pytest.fixture
def earlier_results(tmp_path):
    """The smoke sweep's three cells x three seeds, recorded as done with hand-set win rates."""
    spec = load_sweep(SMOKE, seeds=3)
    folder = sweep_folder(tmp_path, spec.name)
    _write_manifest(folder, plan(spec, folder).manifest)  # as `sweep run` does before its trials
    for cell in spec.cells:
        for seed, hh in enumerate(HH[cell.label]):
            metrics = {"winrate/hh": hh, "winrate/orca": 50.0 + seed, "winrate/hexphi": 50.0,
                       "safety/refusal_rate": 0.5}
            write_record(folder, cell.cell_id, seed, status="done", metrics=metrics)
    return tmp_path


def test_plan_sizes_the_run_from_the_spread_of_earlier_differences(earlier_results, capsys):
    code, out, _ = run_plan(capsys, "--storage", str(earlier_results), "--detect", "5", "--seeds", "3")
    assert code == 0
    assert "9 runs, 9 already done" in out
    assert "Stages to compute: none.\n" in out  # nothing checked against the cache: no "0 more are complete"
    noise, comparisons = study_noise(load("smoke", earlier_results))
    hh = next(n for n in noise if n.study == "activation" and n.column == "winrate/hh")
    assert hh.sd == pytest.approx(np.std(np.subtract(HH["activation=sigmoid"], HH["reference"]), ddof=1))
    needed = seeds_needed(hh.sd, 5.0, ALPHA / comparisons)
    line = next(line for line in out.splitlines() if line.strip().startswith("activation") and "HH win rate" in line)
    assert re.search(rf"\s{needed}$", line)
    assert f"alpha 0.05/{comparisons}" in out


def test_plan_rejects_a_nonpositive_target_and_an_unknown_source(tmp_path, capsys):
    code, _, err = run_plan(capsys, "--storage", str(tmp_path), "--detect", "0")
    assert code == 2 and "--detect" in err
    code, _, err = run_plan(capsys, "--storage", str(tmp_path), "--from", "no_such_sweep")
    assert code == 2 and "no sweep at 'no_such_sweep'" in err
