"""Sweeps on S3-compatible storage: a moto server on the loopback address, no other network.

Covers the stage cache (stages uploaded, marker last), resume (a lost record is recomputed from cached
stages), loading results on a machine with no local copy of anything, and processes racing for one
stage (machines through the lease object, processes on one machine through the mirror's folder lock).
"""

import json
import multiprocessing
import os
from pathlib import Path

import pytest

import stage_racer
from loopback_s3 import s3_server
from seal_ray.config import stable_hash
from seal_ray.results import load
from seal_ray.store import StageStore
from seal_ray.sweep import resume_sweep, run_sweep
from seal_ray.sweep_spec import load_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3_bucket(tmp_path, monkeypatch):
    with s3_server("seal-runs") as env:
        for var, value in {**env, "SEAL_RAY_CACHE": str(tmp_path / "cache-a")}.items():
            monkeypatch.setenv(var, value)
        import boto3

        yield boto3.session.Session().client("s3"), "s3://seal-runs/team/study"


@pytest.mark.ray
def test_a_sweep_on_s3_caches_stages_resumes_and_loads_without_a_local_copy(s3_bucket, tmp_path, monkeypatch):
    client, uri = s3_bucket
    spec = load_sweep(REPO / "sweeps" / "smoke.yaml")
    frame = run_sweep(spec, uri, log=lambda s: None)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="seal-runs", Prefix="team/study/")["Contents"]]
    assert any(k.startswith("team/study/stages/base/") and k.endswith("_COMPLETE.json") for k in keys)
    assert any(k.endswith("model.safetensors") for k in keys)
    assert "team/study/sweeps/smoke/manifest.json" in keys

    # A lost result: resume recomputes that cell from the cached stages, downloading them to a fresh machine.
    lost = next(k for k in keys if k.startswith("team/study/sweeps/smoke/cells/"))
    client.delete_object(Bucket="seal-runs", Key=lost)
    monkeypatch.setenv("SEAL_RAY_CACHE", str(tmp_path / "cache-b"))  # nothing mirrored locally
    computed_before = [e for e in StageStore(uri).events() if e["event"] == "computed"]
    frame = resume_sweep("smoke", uri, log=lambda s: None)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    computed_after = [e for e in StageStore(uri).events() if e["event"] == "computed"]
    assert computed_after == computed_before  # every stage came from the S3 cache

    monkeypatch.setenv("SEAL_RAY_CACHE", str(tmp_path / "cache-c"))
    again = load(f"{uri}/sweeps/smoke")
    assert list(again["status"]) == ["done"] * 3
    assert again["winrate/hexphi"].notna().all()


def _race(uri: str, rounds: list[dict], machines: list[str], tmp_path: Path, *,
          lease_wins: bool = False) -> list[tuple[list[dict], list[dict]]]:
    """One process per entry of `machines` (its SEAL_RAY_CACHE); per round, all need the stage of `key` at once.

    Returns, per round, what each process got and the computations journaled; fails if a process failed.
    """
    # forkserver: a fresh process per racer, forked from a server that has not touched S3 (pyarrow's S3
    # client does not survive a fork), without the import time of spawn.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["seal_ray.store", "boto3", "stage_racer"])
    journal = str(tmp_path / "journal.jsonl")
    start, results = context.Barrier(len(machines)), context.Queue()
    env = {var: value for var, value in os.environ.items() if var.startswith("AWS_")}
    racers = [context.Process(target=stage_racer.need_stages,
                              args=({**env, "SEAL_RAY_CACHE": cache}, uri, rounds, journal, lease_wins, start, results))
              for cache in machines]
    for racer in racers:
        racer.start()
    got = []
    while len(got) < len(racers) * len(rounds) and not any(g.get("error") for g in got):
        got.append(results.get(timeout=300))
    for racer in racers:
        racer.join(timeout=60)
    assert not [g["error"] for g in got if g.get("error")], "a racer failed"
    assert [racer.exitcode for racer in racers] == [0] * len(racers)
    return [([g for g in got if g["round"] == number], stage_racer.computations(journal, number))
            for number in range(len(rounds))]


def _stage_events(client, key: dict) -> list[str]:
    listed = client.list_objects_v2(Bucket="seal-runs", Prefix="team/study/events/").get("Contents", [])
    events = [json.loads(client.get_object(Bucket="seal-runs", Key=o["Key"])["Body"].read()) for o in listed]
    return sorted(e["event"] for e in events if e["hash"] == stable_hash(key))


def test_eight_machines_racing_for_a_stage_on_s3_compute_it_once_and_all_reuse_it(s3_bucket, tmp_path):
    client, uri = s3_bucket
    machines = [str(tmp_path / f"machine-{i}") for i in range(8)]
    rounds = [
        # (the holder's refreshes, which keep a lease held longer than LEASE_S, are tests/test_store.py's:
        # timed here, a starved holder on a loaded machine misses them)
        {"key": {"round": 1}, "compute_s": 0.5, "lease_s": 60.0},
        # a stale lease left by a holder that died: exactly one racer takes it over
        {"key": {"round": 2, "stale_lease": True}, "compute_s": 0.5, "lease_s": 60.0},
        {"key": {"round": 3}, "compute_s": 0.5, "lease_s": 60.0},
    ]
    stale = f"team/study/locks/shared/{stable_hash(rounds[1]['key'])}.lock"
    client.put_object(Bucket="seal-runs", Key=stale, Body=json.dumps({"owner": "a dead host", "time": 0}))
    for race, (got, computed) in zip(rounds, _race(uri, rounds, machines, tmp_path)):
        key = race["key"]
        assert len(computed) == 1, f"{key}: computed {len(computed)} times: {computed}"
        assert sorted(g["cached"] for g in got) == [False] + [True] * 7
        assert {g["out"] for g in got} == {str(computed[0]["pid"])}  # all hold the one computation's files
        assert {g["computed_by"] for g in got} == {computed[0]["pid"]}
        assert _stage_events(client, key) == ["computed"] + ["reused"] * 7
    assert "Contents" not in client.list_objects_v2(Bucket="seal-runs", Prefix="team/study/locks/")  # all released


@pytest.mark.parametrize("lease_wins", [False, True], ids=["conditional-lease", "both-win-the-lease"])
def test_two_processes_on_one_machine_never_compute_into_one_mirror_folder(s3_bucket, tmp_path, lease_wins):
    client, uri = s3_bucket
    machine = str(tmp_path / "one-machine")
    [(got, computed)] = _race(uri, [{"key": {"lease_wins": lease_wins}, "compute_s": 1.0, "lease_s": 60.0}],
                              [machine, machine], tmp_path, lease_wins=lease_wins)
    for first, second in zip(computed, computed[1:]):
        overlapping = first["enter"] < second.get("leave", float("inf")) and second["enter"] < first.get("leave", float("inf"))
        assert not (overlapping and first["dir"] == second["dir"]), f"two computations shared {first['dir']}"
    assert len(computed) == 1  # the second waited on the folder lock, then found the stage complete
    assert sorted(g["cached"] for g in got) == [False, True]
    assert {g["out"] for g in got} == {str(computed[0]["pid"])}


def test_two_processes_on_one_machine_download_a_stage_computed_elsewhere_one_at_a_time(s3_bucket, tmp_path):
    client, uri = s3_bucket
    key = {"computed": "elsewhere"}

    def compute(directory):
        for i in range(40):  # many objects: a long download, a wide window for two downloads to collide
            (directory / f"part-{i:02d}.txt").write_text(str(i))
        (directory / "out.txt").write_text("elsewhere")
        return {"computed_by": 0}

    StageStore(uri).run("shared", key, compute, log=lambda line: None)  # machine "cache-a"
    machine = str(tmp_path / "another-machine")
    [(got, computed)] = _race(uri, [{"key": key, "compute_s": 0.0, "lease_s": 60.0}], [machine, machine], tmp_path)
    assert computed == [] and [g["cached"] for g in got] == [True, True]
    assert {g["out"] for g in got} == {"elsewhere"}
    mirrored = StageStore(uri).stage_dir("shared", stable_hash(key)).relative_to(tmp_path / "cache-a")
    assert sorted(p.name for p in (Path(machine) / mirrored).iterdir()) == sorted(
        p.name for p in (tmp_path / "cache-a" / mirrored).iterdir())
