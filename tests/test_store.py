"""The stage cache: complete only with its marker, reused, never read half-written, computed once."""

import json
import multiprocessing
import time

from seal_ray.store import MARKER, StageStore


def test_a_complete_stage_is_reused_not_recomputed(tmp_path):
    store = StageStore(tmp_path)
    calls = []

    def compute(directory):
        calls.append(directory)
        (directory / "out.txt").write_text("x")
        return {"value": 1}

    first = store.run("demo", {"a": 1}, compute, log=lambda s: None)
    second = store.run("demo", {"a": 1}, compute, log=lambda s: None)
    assert len(calls) == 1 and not first.cached and second.cached
    assert second.meta["value"] == 1 and (second.dir / "out.txt").read_text() == "x"
    assert [e["event"] for e in store.events()] == ["computed", "reused"]


def test_a_half_written_stage_is_never_read_as_complete(tmp_path):
    store = StageStore(tmp_path)

    def crash(directory):
        (directory / "partial.bin").write_text("half")
        (directory / "checkpoints").mkdir()
        (directory / "checkpoints" / "epoch_0001.pt").write_text("ckpt")
        raise RuntimeError("killed mid-stage")

    try:
        store.run("demo", {"a": 2}, crash, log=lambda s: None)
    except RuntimeError:
        pass
    result_dir = store.stage_dir("demo", next(iter((tmp_path / "stages" / "demo").glob("*.lock"))).stem)
    assert not (result_dir / MARKER).exists()

    seen = {}

    def finish(directory):
        seen["left"] = sorted(p.name for p in directory.iterdir())
        return {}

    result = store.run("demo", {"a": 2}, finish, log=lambda s: None)
    assert not result.cached
    assert "partial.bin" not in seen["left"]  # leftovers of the crashed attempt are cleared...
    assert "checkpoints" in seen["left"]  # ...but its checkpoints are kept to resume from


def _slow_stage(root, key, out_queue):
    store = StageStore(root)

    def compute(directory):
        time.sleep(1.0)
        return {"pid": 1}

    result = store.run("shared", key, compute, log=lambda s: None)
    out_queue.put(result.cached)


def test_two_processes_needing_the_same_stage_compute_it_once(tmp_path):
    queue = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_slow_stage, args=(tmp_path, {"k": 1}, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    cached = sorted(queue.get(timeout=5) for _ in procs)
    assert cached == [False, True]
    events = [json.loads(line)["event"] for line in (tmp_path / "stage_events.jsonl").read_text().splitlines()]
    assert events.count("computed") == 1


def test_a_stale_lease_is_taken_over_and_its_old_holder_does_not_delete_the_new_one(tmp_path, monkeypatch):
    import seal_ray.lease
    from seal_ray.lease import lease
    from seal_ray.storage import Storage

    storage = Storage(tmp_path)  # no conditional writes here: the best-effort path of the same protocol
    storage.write_text("locks/x.lock", json.dumps({"owner": "a dead host", "time": 0}))
    logged = []
    with lease(storage, "locks/x.lock", log=logged.append):
        mine = json.loads(storage.read_text("locks/x.lock"))
        assert mine["owner"] != "a dead host" and time.time() - mine["time"] < 60
        storage.write_text("locks/x.lock", json.dumps({"owner": "a waiter that took it over", "time": time.time()}))
    assert json.loads(storage.read_text("locks/x.lock"))["owner"] == "a waiter that took it over"
    assert any("took over the stale lease" in line for line in logged)
    assert any("best effort" in line for line in logged)

    storage.delete("locks/x.lock")
    waits = []
    monkeypatch.setattr(seal_ray.lease, "POLL_S", 0.01)
    with lease(storage, "locks/x.lock", on_wait=lambda: waits.append(1), log=logged.append):
        pass
    assert storage.read_text("locks/x.lock") is None and waits == []  # free: taken at once, deleted when done


def test_a_held_lease_is_refreshed_so_it_never_goes_stale_while_its_holder_runs(tmp_path, monkeypatch):
    import seal_ray.lease
    from seal_ray.lease import lease
    from seal_ray.storage import Storage

    storage = Storage(tmp_path)
    monkeypatch.setattr(seal_ray.lease, "LEASE_S", 0.4)  # refreshed every 0.1 s
    with lease(storage, "locks/x.lock", log=lambda line: None):
        first = storage.read_text("locks/x.lock")
        deadline = time.time() + 30  # no timing asserted: only that a refresh comes while it is held
        while storage.read_text("locks/x.lock") == first and time.time() < deadline:
            time.sleep(0.05)
        refreshed = json.loads(storage.read_text("locks/x.lock"))
    assert refreshed["owner"] == json.loads(first)["owner"] and refreshed["time"] > json.loads(first)["time"]
    assert storage.read_text("locks/x.lock") is None  # deleted by its holder when done
