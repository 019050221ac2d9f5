"""Sweeps on local Ray: a complete DataFrame, shared stages computed once, idempotent re-runs,
new seeds run alone, resume after the driver is killed with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seal_ray.results import load
from seal_ray.store import StageStore
from seal_ray.sweep import run_sweep
from seal_ray.sweep_spec import load_sweep

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "sweeps" / "smoke.yaml"
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _computed(storage: Path) -> list[str]:
    return [e["stage"] for e in StageStore(storage).events() if e["event"] == "computed"]


def test_smoke_sweep_gives_a_complete_frame_and_computes_shared_stages_once(tmp_path, ray_session):
    lines = []
    frame = run_sweep(load_sweep(SMOKE), tmp_path, log=lines.append)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    assert set(frame["label"]) == {"reference", "activation=sigmoid", "method=sft"}
    for column in ("winrate/hexphi", "safety/refusal_rate", "config/selector.activation", "prov/git_commit",
                   "prov/config_hash", "prov/device", "prov/workers", "seed", "error", "mem/selector_peak_mb"):
        assert column in frame.columns, column
    assert (frame.loc[frame["label"] == "method=sft", "winrate/hh"] == 50.0).all()
    computed = _computed(tmp_path)
    # One world, one base model, one SFT reference (select, finetune, generate) for all three cells;
    # a selector for each of the two SEAL cells.
    assert computed.count("data") == 1 and computed.count("base") == 1
    assert computed.count("selector") == 2
    assert computed.count("finetune") == 3  # two SEAL cells + the shared SFT reference
    assert computed.count("generate") == 3


def test_rerunning_a_finished_sweep_trains_nothing_and_one_more_seed_runs_only_new_cells(tmp_path, ray_session):
    run_sweep(load_sweep(SMOKE), tmp_path, log=lambda s: None)
    before = len(_computed(tmp_path))
    lines = []
    frame = run_sweep(load_sweep(SMOKE), tmp_path, log=lines.append)
    assert len(_computed(tmp_path)) == before
    assert any("nothing to run, no training" in line for line in lines)
    assert len(frame) == 3

    lines.clear()
    frame = run_sweep(load_sweep(SMOKE, seeds=2), tmp_path, log=lines.append)
    assert any("3 of 6 cells x seeds done, running 3" in line for line in lines)
    assert len(frame) == 6 and set(frame["status"]) == {"done"}
    new = [e for e in StageStore(tmp_path).events() if e["event"] == "computed"][before:]
    assert {e["cell"].rsplit("-s", 1)[1] for e in new} == {"1"}  # only seed 1 trained anything


def test_sweep_resumes_after_the_driver_is_killed(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "seal_ray.cli", "sweep", "run", str(SMOKE), "--storage", str(tmp_path), "--seeds", "2",
         "--max-concurrent", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    cells = tmp_path / "sweeps" / "smoke" / "cells"
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [p for p in cells.glob("*.json") if json.loads(p.read_text()).get("status") == "done"] if cells.is_dir() else []
        if done:
            break
        time.sleep(0.5)
    assert done, "no cell finished before the deadline"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started: no cleanup at all
    driver.wait(timeout=30)

    finished_before = {p.name for p in done}
    events_before = StageStore(tmp_path).events()
    completed_before = {(e["stage"], e["hash"]) for e in events_before if e["event"] == "computed"}

    resumed = subprocess.run(
        [sys.executable, "-m", "seal_ray.cli", "sweep", "resume", "smoke", "--storage", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    frame = load(tmp_path / "sweeps" / "smoke")
    assert len(frame) == 6 and set(frame["status"]) == {"done"}
    after = [e for e in StageStore(tmp_path).events()[len(events_before):] if e["event"] == "computed"]
    assert not {(e["stage"], e["hash"]) for e in after} & completed_before  # no finished stage ran twice
    assert finished_before <= {p.name for p in cells.glob("*.json")}


def test_optuna_search_is_reproducible_from_its_seed(tmp_path, ray_session):
    import yaml

    raw = yaml.safe_load(SMOKE.read_text())
    raw.pop("ablations")
    raw.pop("baselines")
    raw["search"] = {"method": "optuna", "metric": "winrate/hexphi", "mode": "max", "samples": 2, "seed": 7,
                     "space": {"selector.lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-1}}}
    from seal_ray.sweep_spec import parse_sweep

    sampled = []
    for run in ("a", "b"):
        frame = run_sweep(parse_sweep(raw, "optuna.yaml", name="optuna"), tmp_path / run, log=lambda s: None)
        trials = frame[frame["studies"].str.contains("optuna")]
        assert len(trials) == 2 and set(trials["status"]) == {"done"}
        sampled.append(sorted(trials["config/selector.lr"]))
    assert sampled[0] == sampled[1]
    assert sampled[0][0] != sampled[0][1]
