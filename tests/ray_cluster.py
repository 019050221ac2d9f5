"""A Ray cluster of two nodes (head + a second raylet) simulated on this machine, on loopback.

Both raylets get their own agent ports and one private temp dir that every process of the cluster
names, so a test stops only its own processes. `second_node_prefix` runs the second `ray start`
under a wrapper (e.g. `unshare -m` with a tmpfs over a folder: that node then sees another folder at
the same path, as a node whose NFS mount failed would).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _names_temp_dir(proc: Path, marker: str) -> bool:
    if marker.encode() in (proc / "cmdline").read_bytes():
        return True
    # Ray's agents rename themselves ("ray::DashboardAgent"); their open log files still name the temp dir.
    return any(marker in os.readlink(fd) for fd in (proc / "fd").iterdir() if fd.is_symlink())


def kill_cluster(temp_dir: str) -> None:
    """Stop only this cluster's Ray processes (they name its temp dir), not others on the machine."""
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


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment of a test cluster's nodes and clients. Ray 2.60 token authentication: every node
    (and the job client) must use the cluster's token, here one of its own in RAY_AUTH_TOKEN: `ray start
    --head` creates none, and ~/.ray/auth_token exists only once some ray.init() has run on this machine."""
    return {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), **extra}


@contextlib.contextmanager
def two_node_cluster(second_node_prefix: tuple[str, ...] = (), second_node_resources: str | None = None
                     ) -> Iterator[tuple[int, int, dict]]:
    """(GCS port, dashboard port, env for clients) of a running head + second raylet."""
    gcs, dashboard = free_port(), free_port()
    # A short private temp dir (unix socket paths are limited to ~107 bytes) that every process names.
    temp_dir = tempfile.mkdtemp(prefix="seal-ray-", dir="/tmp")
    env = cluster_env()
    common = ["--disable-usage-stats", f"--temp-dir={temp_dir}"]

    def own_ports() -> list[str]:
        # Two raylets on one machine: each needs its own agent ports (the defaults would collide).
        names = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
        return [f"--{name}={free_port()}" for name in names]

    def start(command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    try:
        for attempt in (1, 2):  # a loaded machine can miss the GCS's start deadline once: start afresh
            try:
                start([RAY, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                       "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                       *common, *own_ports()])
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                kill_cluster(temp_dir)
                if attempt == 2:
                    raise
        extra = [f"--resources={second_node_resources}"] if second_node_resources else []
        start([*second_node_prefix, RAY, "start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
               "--num-cpus=1", *extra, *common, *own_ports()])
        yield gcs, dashboard, env
    finally:
        kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
