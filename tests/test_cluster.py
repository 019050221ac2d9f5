"""A sweep on a two-node Ray cluster simulated on this machine: submitted with `ray job submit` from a copy
of the project without .git (what `--working-dir .` uploads; the rows keep the commit and fingerprint), and
finishing by itself when the second node is killed mid-sweep."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
from ray_cluster import RAY, cluster_env, free_port as _free_port, kill_cluster as _kill_cluster

from seal_ray.provenance import checkout_commit, fingerprint_of
pytestmark = pytest.mark.ray


class Cluster(NamedTuple):
    gcs: int  # the head's GCS port
    dashboard: int
    env: dict[str, str]  # for clients: the cluster's token
    second_raylet_port: int  # the second node's node-manager port, which names its raylet process


@pytest.fixture
def two_node_cluster(tmp_path):
    gcs, dashboard, second_raylet_port = _free_port(), _free_port(), _free_port()
    # A short private temp dir (unix socket paths are limited to ~107 bytes) that every process names.
    temp_dir = tempfile.mkdtemp(prefix="seal-ray-", dir="/tmp")
    # A dead node is declared dead after 5 failed health checks 1 s apart (default 3 s); a slow live one
    # still gets the default 10 s timeout.
    env = cluster_env(RAY_health_check_period_ms="1000")
    common = ["--disable-usage-stats", f"--temp-dir={temp_dir}"]

    def own_ports() -> list[str]:
        # Two raylets on one machine: each needs its own agent ports (the defaults would collide).
        names = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
        return [f"--{name}={_free_port()}" for name in names]

    def ray_start(*args: str) -> None:
        started = subprocess.run([RAY, "start", *args, *common, *own_ports()], capture_output=True, text=True, env=env, timeout=180)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]

    try:
        ray_start("--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=true",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}")
        ray_start(f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                  f"--node-manager-port={second_raylet_port}")
        yield Cluster(gcs, dashboard, env, second_raylet_port)
    finally:
        _kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_sweep_submitted_as_a_job_runs_cells_on_both_nodes(tmp_path, two_node_cluster):
    gcs, dashboard, env, _ = two_node_cluster
    storage = tmp_path / "storage"
    copy = tmp_path / "project"  # what --working-dir uploads: the sources, no .git
    for part in ("seal_ray", "analysis", "sweeps"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "seal_ray" / "__init__.py", "a") as edited:  # so the rows can only carry the copy's fingerprint
        edited.write("# an edit made after the last commit\n")
    commit = checkout_commit()
    assert commit and not (copy / ".git").exists()
    # README: the submitting side passes its commit on, since the copy has no .git. The job runs from the
    # copy by `cd`, not --working-dir: two raylets on one machine share one runtime_resources folder, and
    # the second node's cleanup deletes the uploaded folder under the driver (a simulation artefact).
    entrypoint = (f"cd {copy} && env SEAL_RAY_GIT_COMMIT={commit} {sys.executable} -m seal_ray.cli sweep run "
                  f"sweeps/smoke.yaml --address auto --storage {storage} --seeds 2")
    deadline = time.time() + 120
    while True:  # the job server needs a moment after `ray start`
        submitted = subprocess.run([RAY, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--",
                                    "sh", "-c", entrypoint],
                                   capture_output=True, text=True, timeout=420, env=env)
        not_ready = any(text in submitted.stderr + submitted.stdout for text in ("Connection", "No available agent"))
        if submitted.returncode == 0 or time.time() > deadline or not not_ready:
            break
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (storage / "sweeps" / "smoke" / "cells").glob("*.json")]
    assert len(records) == 6 and {r["status"] for r in records} == {"done"}
    nodes = {r["node_id"] for r in records}
    assert len(nodes) == 2, f"cells ran on {len(nodes)} node(s): {nodes}"
    assert "read and written from each of the 2 node(s)" in submitted.stdout  # the storage probe passed
    fingerprint = fingerprint_of(copy / "seal_ray")
    assert fingerprint != fingerprint_of(REPO / "seal_ray")
    for record in records:
        assert record["metrics"]["prov/git_commit"] == commit
        assert record["metrics"]["prov/source_fingerprint"] == fingerprint
        assert record["metrics"]["prov/ray"].startswith("2.60")


def _raylet(node_manager_port: int) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with _gone_is_fine():
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv[0].endswith(b"/raylet") and f"--node_manager_port={node_manager_port}".encode() in argv:
                    return int(proc.name)
    raise AssertionError(f"no raylet with node manager port {node_manager_port}")


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with _gone_is_fine():
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(proc.name))
    return found


class _gone_is_fine:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, OSError)  # the process ended while we looked


# slow tier (make test-all): a full Ray sweep; it never completed on the overloaded machine of the
# session that wrote it, so it is kept out of `make test` until it has passed on a quiet one
@pytest.mark.slow
def test_a_node_killed_mid_sweep_is_retried_and_the_same_sweep_run_finishes(tmp_path, two_node_cluster):
    """A crashed machine: SIGKILL to the second node's raylet and every worker it started, while a cell
    runs there. The lost trial starts again on the head node from its completed stages."""
    import yaml

    from seal_ray.store import StageStore

    storage, printed = tmp_path / "storage", tmp_path / "driver.out"
    # The smoke sweep with a selector long enough to be caught mid-training: its 2 epochs of a
    # second or less would end between the first checkpoint and the kill.
    spec = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    spec["base"]["selector"]["epochs"] = 20  # the reference ramp (decay 0.03) stays above 0 up to 34
    sweep_file = tmp_path / "smoke.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    driver = subprocess.Popen(
        [sys.executable, "-m", "seal_ray.cli", "sweep", "run", str(sweep_file), "--seeds", "2",
         "--address", f"127.0.0.1:{two_node_cluster.gcs}", "--storage", str(storage)],
        stdout=printed.open("w"), stderr=subprocess.STDOUT, env={**two_node_cluster.env, "PYTHONUNBUFFERED": "1"})
    raylet = _raylet(two_node_cluster.second_raylet_port)
    sweep = storage / "sweeps" / "smoke"
    victim, deadline = None, time.time() + 500
    while victim is None and driver.poll() is None and time.time() < deadline:
        records = [json.loads(p.read_text()) for p in (sweep / "cells").glob("*.json")] if sweep.is_dir() else []
        # A cell on the second node in the middle of its selector training: the base stage complete,
        # the selector's first epoch checkpointed, far from the cell's end.
        for record in records:
            log = (sweep / "logs" / f"{record['cell_id']}-s{record['seed']}.log").read_text()
            selector = re.search(r"\[selector\] computing (\w+)", log)
            if record["status"] == "running" and record["pid"] in _children(raylet) and selector and \
                    list((storage / "stages" / "selector" / selector.group(1) / "checkpoints").glob("*.pt")):
                victim = record
        time.sleep(0.2)
    assert victim, "no cell trained its selector on the second node"
    node_processes = _children(raylet)
    os.kill(raylet, signal.SIGKILL)
    for pid in node_processes:
        with _gone_is_fine():
            os.kill(pid, signal.SIGKILL)

    try:
        driver.wait(timeout=600)
    except subprocess.TimeoutExpired:
        driver.kill()
        raise AssertionError("the sweep did not finish after the node was lost:\n" + printed.read_text()[-4000:]) from None
    out = printed.read_text()
    assert driver.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "FileNotFoundError" not in out, out[-4000:]
    assert "trial lost (node lost)" in out and "sweep 'smoke': all 6 cells x seeds done" in out, out[-4000:]
    records = {p.name: json.loads(p.read_text()) for p in (sweep / "cells").glob("*.json")}
    assert len(records) == 6 and {r["status"] for r in records.values()} == {"done"}
    lost = records[f"{victim['cell_id']}-s{victim['seed']}.json"]
    assert [i["reason"] for i in lost["interruptions"]] == ["node lost"] and lost["attempts"] == 2
    lost_log = (sweep / "logs" / f"{victim['cell_id']}-s{victim['seed']}.log").read_text()
    resumed = re.search(r"\[selector\] resuming from the checkpoint after epoch (\d+)", lost_log)
    assert resumed and int(resumed.group(1)) >= 1, lost_log[-3000:]  # not from zero
    assert all(not r.get("interruptions") for name, r in records.items() if r is not lost)
    computed = [(e["stage"], e["hash"]) for e in StageStore(storage).events() if e["event"] == "computed"]
    assert len(computed) == len(set(computed))  # each finished stage computed once, the lost cell's included
