"""The fault catalogue: each fault injected, then the results and every completed stage checked."""

import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import yaml

from seal_ray.cli import SWEEP_EXIT_CODES, main
from seal_ray.errors import UserError
from seal_ray.results import load, sweep_outcome
from seal_ray.store import MARKER
from seal_ray.sweep import run_sweep, sweep_lock
from seal_ray.sweep_spec import load_sweep, parse_sweep

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "sweeps" / "smoke.yaml"


def _failing_sweep() -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["base"]["selection"] = {"method": "sft"}
    raw.pop("baselines")
    raw["ablations"] = {"method": {"selection.method": ["seal"]}, "diverging": {"finetune.lr": [1.0e30]}}
    return raw


@pytest.mark.ray
def test_a_raising_stage_and_a_nan_loss_fail_their_cells_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_RAY_FAULT", "selector@0.0=raise")
    frame = run_sweep(parse_sweep(_failing_sweep(), "faults.yaml", name="faults"), tmp_path, log=lambda s: None)
    by_label = {row["label"]: row for _, row in frame.iterrows()}
    assert by_label["reference"]["status"] == "done"
    assert by_label["method=seal"]["status"] == "failed"
    assert "injected fault in stage selector" in by_label["method=seal"]["error"]
    assert by_label["lr=1e+30"]["status"] == "failed"
    assert "became nan" in by_label["lr=1e+30"]["error"] or "became inf" in by_label["lr=1e+30"]["error"]
    # Every stage marked complete is whole: its marker parses and its outputs are there.
    for marker in tmp_path.glob("stages/*/*/" + MARKER):
        meta = json.loads(marker.read_text())
        assert meta["stage"] == marker.parent.parent.name
    # The frame is consistent read back from storage alone.
    again = load(tmp_path / "sweeps" / "faults")
    assert list(again["status"]) == list(frame["status"])
    # A cell that raises fails once: no retry, no interruption; the sweep ends "some failed" (exit 1).
    failed = json.loads((tmp_path / "sweeps" / "faults" / "cells" / f"{by_label['method=seal']['cell_id']}-s0.json").read_text())
    assert failed["attempts"] == 1 and not failed.get("interruptions")
    assert sweep_outcome(frame) == "failed" and SWEEP_EXIT_CODES["failed"] == 1


def test_why_a_trial_was_lost_and_how_a_sweep_ended():
    import pandas as pd
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    from seal_ray.progress import interruption_reason

    assert interruption_reason(RayActorError(error_msg="The actor died because its node has died. Node Id: 01")) == "node lost"
    assert interruption_reason(RayActorError(error_msg="x", preempted=True)) == "node lost"
    assert interruption_reason(ActorDiedError()) == "worker died"
    assert interruption_reason(OSError("disk")) == "trial error: OSError"
    # A killed raylet: the trial's actor cannot be reached; the node's state decides (also from the error's text).
    unreachable = ActorUnavailableError("The actor is temporarily unavailable: RpcError: Socket closed", b"\0" * 16)
    assert interruption_reason(unreachable, lambda: True) == "node lost"
    assert interruption_reason(unreachable, lambda: False) == "worker died"
    assert interruption_reason(unreachable) == "worker died"  # node state unknown
    assert interruption_reason(str(unreachable), lambda: True) == "node lost"
    assert interruption_reason(None, lambda: True) == "node lost"  # Tune had not stored the error yet
    assert interruption_reason(None) == "trial error"
    frame = pd.DataFrame({"status": ["done", "done"]})
    assert sweep_outcome(frame) == "done"
    assert sweep_outcome(frame.assign(status=["done", "failed"])) == "failed"
    assert sweep_outcome(frame.assign(status=["failed", "interrupted"])) == "interrupted"  # resume first
    assert sweep_outcome(frame.assign(status=["done", "missing"])) == "interrupted"


def test_a_second_run_of_the_same_sweep_is_refused_while_one_runs(tmp_path):
    directory = tmp_path / "sweeps" / "smoke"
    directory.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from seal_ray.sweep import sweep_lock\n"
        f"with sweep_lock(Path({str(directory)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="already running"):
            run_sweep(load_sweep(SMOKE), tmp_path, log=lambda s: None)
        assert not (directory / "manifest.json").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    with sweep_lock(directory):  # the lock dies with its holder (kill -9 included)
        pass


def test_storage_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["sweep", "run", str(SMOKE), "--storage", str(blocker / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "not writable" in err and "Traceback" not in err


def test_a_full_disk_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    code = main(["sweep", "run", str(SMOKE), "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "MiB free" in err
    assert not (tmp_path / "runs" / "sweeps").exists()
