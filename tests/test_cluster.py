"""A sweep on a two-node Ray cluster simulated on this machine, submitted with `ray job submit` from a copy
of the project without .git (what `--working-dir .` uploads)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import RAY, two_node_cluster

from seal_ray.provenance import checkout_commit, fingerprint_of

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


@pytest.fixture
def two_node_cluster_fixture():
    with two_node_cluster() as cluster:
        yield cluster


def test_a_sweep_submitted_as_a_job_runs_cells_on_both_nodes(tmp_path, two_node_cluster_fixture):
    gcs, dashboard, env = two_node_cluster_fixture
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
    assert len(records) == 6 and {r["status"] for r in records} == {"done"}, submitted.stdout[-3000:]
    nodes = {r["node_id"] for r in records}
    assert len(nodes) == 2, f"cells ran on {len(nodes)} node(s): {nodes}"
    assert "read and written from each of the 2 node(s)" in submitted.stdout  # the storage probe passed
    fingerprint = fingerprint_of(copy / "seal_ray")
    assert fingerprint != fingerprint_of(REPO / "seal_ray")
    for record in records:
        assert record["metrics"]["prov/git_commit"] == commit
        assert record["metrics"]["prov/source_fingerprint"] == fingerprint
        assert record["metrics"]["prov/ray"].startswith("2.60")
