"""A sweep on a two-node Ray cluster simulated on this machine, submitted with `ray job submit`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _names_temp_dir(proc: Path, marker: str) -> bool:
    if marker.encode() in (proc / "cmdline").read_bytes():
        return True
    # Ray's agents rename themselves ("ray::DashboardAgent"); their open log files still name the temp dir.
    return any(marker in os.readlink(fd) for fd in (proc / "fd").iterdir() if fd.is_symlink())


def _kill_cluster(temp_dir: str) -> None:
    """Stop only this test's Ray processes (they name its temp dir), not others on the machine."""
    for _ in range(2):  # a second pass catches what the first pass orphaned
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if _names_temp_dir(proc, temp_dir):
                    os.kill(int(proc.name), 9)
            except (OSError, ProcessLookupError):
                pass
        time.sleep(1)


@pytest.fixture
def two_node_cluster(tmp_path):
    gcs, dashboard = _free_port(), _free_port()
    # A short private temp dir (unix socket paths are limited to ~107 bytes) that every process names.
    temp_dir = tempfile.mkdtemp(prefix="seal-ray-", dir="/tmp")
    # Ray 2.60 token authentication: every node (and the job client) must use the cluster's token,
    # here the one `ray start --head` keeps in ~/.ray/auth_token.
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}
    common = ["--disable-usage-stats", f"--temp-dir={temp_dir}"]

    def own_ports() -> list[str]:
        # Two raylets on one machine: each needs its own agent ports (the defaults would collide).
        names = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
        return [f"--{name}={_free_port()}" for name in names]

    subprocess.run([RAY, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", *common, *own_ports()],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1", *common, *own_ports()],
                       check=True, capture_output=True, env=env, timeout=120)
        yield gcs, dashboard, env
    finally:
        _kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_sweep_submitted_as_a_job_runs_cells_on_both_nodes(tmp_path, two_node_cluster):
    gcs, dashboard, env = two_node_cluster
    storage = tmp_path / "storage"
    entrypoint = f"{sys.executable} -m seal_ray.cli sweep run {REPO / 'sweeps' / 'smoke.yaml'} --address auto --storage {storage} --seeds 2"
    deadline = time.time() + 120
    while True:  # the job server needs a moment after `ray start`
        submitted = subprocess.run([RAY, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--", *entrypoint.split()],
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
