"""A process that needs one stage of a StageStore, for the race tests (tests/test_s3.py).

Its "computation" is trivial: it writes who computed it, and records in a shared journal when it
entered and left which folder, so a test can check that no two computations ever shared one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from pathlib import Path


def need_stages(env: dict[str, str], uri: str, rounds: list[dict], journal: str, lease_wins: bool, start, results) -> None:
    """Set this process up as one machine (`env`: its own SEAL_RAY_CACHE), then need one stage per round.

    Each round (`key`, `compute_s`, `lease_s`) begins when every racer has reached `start`. With
    `lease_wins`, every racer is told it holds the lease (the worst a best-effort lease can do),
    leaving only this machine's folder lock between racers that share a mirror.
    """
    os.environ.update(env)
    import seal_ray.lease
    import seal_ray.store
    from seal_ray.store import StageStore

    seal_ray.lease.POLL_S = 0.2
    if lease_wins:
        seal_ray.store.lease = lambda *args, **kwargs: contextlib.nullcontext()
    store = StageStore(uri)
    for number, race in enumerate(rounds):
        seal_ray.lease.LEASE_S = race["lease_s"]  # held longer than this: only the holder's refreshes keep it

        def compute(directory: Path) -> dict:
            _note(journal, number, "enter", directory)
            time.sleep(race["compute_s"])
            (directory / "out.txt").write_text(str(os.getpid()))
            _note(journal, number, "leave", directory)
            return {"computed_by": os.getpid()}

        start.wait()
        try:
            result = store.run("shared", race["key"], compute, log=lambda line: None)
            results.put({"round": number, "pid": os.getpid(), "cached": result.cached,
                         "computed_by": result.meta["computed_by"], "out": (result.dir / "out.txt").read_text()})
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            results.put({"round": number, "pid": os.getpid(), "error": traceback.format_exc()})
            start.abort()  # the other racers stop at the next round instead of waiting for this one
            raise


def _note(journal: str, number: int, event: str, directory: Path) -> None:
    line = json.dumps({"round": number, "event": event, "pid": os.getpid(), "dir": str(directory), "time": time.time()})
    with open(journal, "a") as handle:  # one short O_APPEND write per line: lines never interleave
        handle.write(line + "\n")


def computations(journal: str, number: int) -> list[dict]:
    """One row per computation of round `number`: its process, folder, and when it entered and left it."""
    rows: dict[int, dict] = {}
    notes = [json.loads(line) for line in Path(journal).read_text().splitlines()] if Path(journal).is_file() else []
    for note in notes:
        if note["round"] == number:
            row = rows.setdefault(note["pid"], {"pid": note["pid"], "dir": note["dir"]})
            row[note["event"]] = note["time"]
    return list(rows.values())
