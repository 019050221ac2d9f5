"""Issue 20 and `seal-ray doctor`: a node that does not share the sweep's storage is named before any work.

A two-node cluster on this machine whose second raylet runs in its own mount namespace (`unshare -m`)
with a tmpfs over one folder: that node (and every worker it starts) sees an empty folder of its own
at the same path, as a node whose NFS mount failed sees its local disk. A second folder, not
covered, is shared by both nodes. Drivers run in this machine's namespace, as the head node's
processes do. Ray clients run as subprocesses: token authentication is fixed when a process
first loads Ray.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ray_cluster import two_node_cluster

from seal_ray.cluster_probe import check_storage_token, needs_probe, write_storage_token
from seal_ray.errors import UserError
from seal_ray.storage import Storage

REPO = Path(__file__).resolve().parents[1]

# Run on the cluster by a client process: which node is which, the probe on both folders, a node
# "joining" while a sweep runs, and what each node sees in the uncovered-by-the-driver folder.
CLIENT = """
import json, os, sys
import ray
from seal_ray.cluster_probe import StorageWatch, alive_nodes, probe_storage, run_on_each_node
from seal_ray.errors import UserError
address, shared, split = sys.argv[1:4]
ray.init(address=address, log_to_driver=False)
nodes = alive_nodes()
other = [n["NodeID"] for n in nodes if "split_view" in n["Resources"]][0]
head = [n["NodeID"] for n in nodes if "split_view" not in n["Resources"]][0]
report = {"head": head, "other": other}
report["shared"] = {a.node_id: a.problem for a in probe_storage(shared)}
report["split"] = {a.node_id: a.problem for a in probe_storage(split)}
watch = StorageWatch(split, log=lambda line: None)
watch.known, watch._first_pass = {head}, False  # as if `other` joined after the sweep started
report["joined"] = [a.node_id for a in watch.check_new_nodes()]
import ray.cloudpickle
stopper = ray.cloudpickle.loads(ray.cloudpickle.dumps(watch.stopper()))  # Tune pickles it with the run config
with watch:
    report["stop_all"] = stopper.stop_all()
try:
    watch.raise_if_failed()
except UserError as err:
    report["stop_message"] = str(err)
listing = lambda path: {"names": sorted(os.listdir(path))}
report["seen"] = {a.node_id: a.value["names"] for a in run_on_each_node(listing, nodes, lambda n: (split,))}
print("REPORT " + json.dumps(report))
"""


def _unshare_works() -> bool:
    probe = tempfile.mkdtemp(prefix="seal-ns-")
    try:
        done = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", probe],
                              capture_output=True, timeout=10)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@pytest.fixture(scope="module")
def split_cluster():
    if not _unshare_works():
        pytest.skip("this machine does not allow `unshare -m` with a tmpfs mount (needs root or user namespaces)")
    root = Path(tempfile.mkdtemp(prefix="seal-probe-"))
    shared, split = root / "shared", root / "split"
    shared.mkdir()
    split.mkdir()
    wrapper = ("unshare", "-m", "--propagation", "private", "sh", "-c", f'mount -t tmpfs tmpfs {split} && exec "$0" "$@"')
    try:
        with two_node_cluster(wrapper, second_node_resources='{"split_view": 1}') as (gcs, dashboard, env):
            yield f"127.0.0.1:{gcs}", env, shared, split
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _seal_ray(env, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "seal_ray.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)


@pytest.mark.ray
def test_a_sweep_on_storage_a_node_does_not_share_exits_2_naming_it_and_writes_nothing(split_cluster):
    address, env, shared, split = split_cluster
    done = _seal_ray(env, "sweep", "run", str(REPO / "sweeps" / "smoke.yaml"), "--address", address, "--storage", str(split))
    client = subprocess.run([sys.executable, "-c", CLIENT, address, str(shared), str(split)], capture_output=True,
                            text=True, timeout=300, env=env, cwd=REPO)
    report = json.loads(client.stdout.split("REPORT ", 1)[1]) if "REPORT " in client.stdout else None
    assert report, client.stdout[-2000:] + client.stderr[-3000:]
    head, other = report["head"], report["other"]

    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert other[:12] in done.stderr and head[:12] not in done.stderr
    assert str(split) in done.stderr and "s3://" in done.stderr and "mount" in done.stderr
    # No sweep record, no stage, no probe file: not in the driver's view, not in the other node's own folder.
    assert sorted(p.name for p in split.iterdir()) == []
    assert report["seen"] == {head: [], other: []}

    # The probe itself: shared storage passes on both nodes; the node with its own folder fails, the head passes.
    assert report["shared"] == {head: "", other: ""}
    assert report["split"][head] == "" and "cannot read the token the driver wrote" in report["split"][other]
    # A node that joins while a sweep runs and fails the probe stops the sweep, named.
    assert report["joined"] == [other] and report["stop_all"] is True
    assert other[:12] in report["stop_message"] and "sweep resume" in report["stop_message"]


@pytest.mark.ray
def test_doctor_reports_both_nodes_and_the_storage_probe(split_cluster):
    address, env, shared, split = split_cluster
    done = _seal_ray(env, "doctor", "--address", address, "--storage", str(shared))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    nodes = [line for line in lines if line.split()[:2] == ["ok", "node"]]
    assert len(nodes) == 2 and all("1 CPU, 0 GPU" in line and "torch" in line and "nccl" in line for line in nodes)
    assert any(line.startswith("ok") and "read and written from each of the 2 node(s)" in line for line in lines)
    assert any(line.split()[:2] == ["ok", "ray"] and "Ray 2.60" in line for line in lines)



@pytest.mark.ray
def test_doctor_exits_2_with_a_clear_line_when_the_storage_is_not_writable(split_cluster):
    address, env, shared, split = split_cluster
    readonly = shared.parent / "readonly"
    readonly.mkdir()
    # A read-only mount (root writes through permissions, not through a read-only file system).
    prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c", f'mount -t tmpfs -o ro tmpfs {readonly} && exec "$0" "$@"')
    done = _seal_ray(env, "doctor", "--address", address, "--storage", str(readonly), prefix=prefix)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-2000:]
    errors = [line for line in done.stdout.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "not writable" in errors[0] and "Read-only file system" in errors[0], done.stdout
    assert "Traceback" not in done.stderr


def test_only_a_local_or_nfs_storage_on_a_cluster_is_probed():
    assert needs_probe("/mnt/seal", "auto") and needs_probe("runs", "10.0.0.1:6379")
    assert not needs_probe("runs", None)  # a local Ray: one machine
    assert not needs_probe("s3://bucket/prefix", "auto") and not needs_probe("gs://bucket", "auto")


def test_a_trial_refuses_to_run_where_the_sweeps_storage_token_is_not_seen(tmp_path):
    sweep = Storage(tmp_path / "shared" / "sweeps" / "s")
    token = write_storage_token(sweep)
    check_storage_token(sweep, token)  # the node that sees the sweep's folder runs
    check_storage_token(Storage(tmp_path / "elsewhere"), None)  # no token: a local Ray, nothing to check
    node_local = Storage(tmp_path / "node-local" / "sweeps" / "s")  # same path on a node whose mount failed
    with pytest.raises(UserError, match="does not see the sweep's folder"):
        check_storage_token(node_local, token)
    assert not (tmp_path / "node-local").exists()  # refused before writing anything


def test_the_sweeps_stopper_survives_tunes_pickling_and_stops_once_a_node_failed(monkeypatch):
    import ray.cloudpickle

    from seal_ray import cluster_probe
    from seal_ray.cluster_probe import NodeAnswer, StorageWatch

    watch = StorageWatch("/mnt/seal", log=lambda line: None)
    stopper = ray.cloudpickle.loads(ray.cloudpickle.dumps(watch.stopper()))  # as Tune saves its run config
    monkeypatch.setitem(cluster_probe._WATCHING, watch.key, watch)  # what `with watch:` does, without its thread
    assert stopper.stop_all() is False
    watch.failed.append(NodeAnswer("f" * 56, "10.0.0.7", "worker-7", problem="cannot read the token the driver wrote"))
    assert stopper.stop_all() is True
    with pytest.raises(UserError, match="node ffffffffffff .worker-7, 10.0.0.7.: cannot read the token"):
        watch.raise_if_failed()
