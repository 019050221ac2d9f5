"""The stage cache: `<storage>/stages/<stage>/<hash>/`, complete only once its marker exists.

The marker `_COMPLETE.json` is written last and atomically, so a folder left half-written by a crash
is never read as complete: the next run clears it and computes again, keeping `checkpoints/` so a
training stage resumes from its last epoch. Two processes that need the same missing stage serialise
on a lock: one computes, the others wait and reuse. The storage may be a local or NFS folder (an
exclusive flock) or a cloud URI (storage.py; a lease object, and a local mirror of stage folders).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from seal_ray.config import stable_hash
from seal_ray.storage import Storage

MARKER = "_COMPLETE.json"
CHECKPOINTS = "checkpoints"
KEEP_ON_RETRY = {CHECKPOINTS}
LEASE_S = 600.0  # a remote lock whose holder has not refreshed it for this long is taken over


@dataclass
class StageResult:
    stage: str
    hash: str
    dir: Path
    meta: dict[str, Any]
    cached: bool


def write_json_atomic(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(partial, path)


class StageStore:
    def __init__(self, root: str | Path):
        self.storage = Storage(root)
        self.root = self.storage.local_root

    @staticmethod
    def rel(stage: str, key_hash: str) -> str:
        return f"stages/{stage}/{key_hash}"

    def stage_dir(self, stage: str, key_hash: str) -> Path:
        """The stage's folder on this machine (its mirror when the storage is a URI)."""
        return self.storage.local_path(self.rel(stage, key_hash))

    def is_complete(self, stage: str, key_hash: str) -> bool:
        return self.storage.exists(f"{self.rel(stage, key_hash)}/{MARKER}")

    def meta(self, stage: str, key_hash: str) -> dict[str, Any]:
        return json.loads(self.storage.read_text(f"{self.rel(stage, key_hash)}/{MARKER}"))

    def _record(self, event: str, stage: str, key_hash: str, cell: str | None) -> None:
        record = {"event": event, "stage": stage, "hash": key_hash, "cell": cell, "time": time.time(),
                  "host": socket.gethostname()}
        if self.storage.is_local:
            self.root.mkdir(parents=True, exist_ok=True)
            # O_APPEND writes of one short line are atomic, so concurrent cells never interleave lines.
            with open(self.root / "stage_events.jsonl", "a") as events:
                events.write(json.dumps(record) + "\n")
        else:  # objects cannot be appended to: one small object per event
            self.storage.write_text(f"events/{record['time']:.6f}-{uuid.uuid4().hex[:8]}.json", json.dumps(record))

    def events(self) -> list[dict[str, Any]]:
        if self.storage.is_local:
            path = self.root / "stage_events.jsonl"
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        names = self.storage.list_names("events")
        return sorted((json.loads(self.storage.read_text(f"events/{n}")) for n in names), key=lambda e: e["time"])

    @contextlib.contextmanager
    def _lock(self, stage: str, key_hash: str, log: Callable[[str], None]) -> Iterator[None]:
        lock = self._local_lock if self.storage.is_local else self._lease_lock
        with lock(stage, key_hash, log):
            yield

    @contextlib.contextmanager
    def _local_lock(self, stage: str, key_hash: str, log) -> Iterator[None]:
        lock_path = self.root / "stages" / stage / f"{key_hash}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"[{stage}] {key_hash} is being computed by another process; waiting for it")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _lease_lock(self, stage: str, key_hash: str, log) -> Iterator[None]:
        """A lease object on object storage: written, read back to confirm, deleted when done.

        Two writers racing within one round trip can both believe they hold it; the stage is then
        computed twice, which costs time but never corrupts (each upload is whole, the marker last).
        """
        rel = f"locks/{stage}/{key_hash}.lock"
        owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        announced = False
        while True:
            held = self.storage.read_text(rel)
            if held is None or time.time() - json.loads(held)["time"] > LEASE_S:
                self.storage.write_text(rel, json.dumps({"owner": owner, "time": time.time()}))
                if json.loads(self.storage.read_text(rel) or "{}").get("owner") == owner:
                    break
            if not announced:
                log(f"[{stage}] {key_hash} is being computed by another process; waiting for it")
                announced = True
            time.sleep(2.0)
        try:
            yield
        finally:
            self.storage.delete(rel)

    def run(
        self,
        stage: str,
        key: dict[str, Any],
        compute: Callable[[Path], dict[str, Any]],
        *,
        cell: str | None = None,
        log: Callable[[str], None] = print,
    ) -> StageResult:
        """Reuse the stage for `key` if complete, else compute it into its folder and mark it complete."""
        key_hash = stable_hash(key)
        rel = self.rel(stage, key_hash)
        if not self.is_complete(stage, key_hash):
            with self._lock(stage, key_hash, log):
                if not self.is_complete(stage, key_hash):
                    directory = self._prepare(rel)
                    write_json_atomic(directory / "key.json", key)
                    log(f"[{stage}] computing {key_hash}")
                    started = time.perf_counter()
                    meta = compute(directory)
                    marker = {"stage": stage, "hash": key_hash, "finished": time.time(),
                              "seconds": time.perf_counter() - started, **meta}
                    self._publish(rel, directory, marker)
                    self._record("computed", stage, key_hash, cell)
                    return StageResult(stage, key_hash, directory, self.meta(stage, key_hash), cached=False)
        self._record("reused", stage, key_hash, cell)
        log(f"[{stage}] reusing {key_hash}")
        directory = self.storage.ensure_local(rel, MARKER)
        return StageResult(stage, key_hash, directory, self.meta(stage, key_hash), cached=True)

    def _prepare(self, rel: str) -> Path:
        """Clear what an interrupted attempt left, except its checkpoints (fetched back from a URI)."""
        directory = self.storage.local_path(rel)
        directory.mkdir(parents=True, exist_ok=True)
        for entry in directory.iterdir():
            if entry.name in KEEP_ON_RETRY:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if not self.storage.is_local:
            self.storage.download_dir(f"{rel}/{CHECKPOINTS}", directory / CHECKPOINTS)
        return directory

    def _publish(self, rel: str, directory: Path, marker: dict[str, Any]) -> None:
        text = json.dumps(marker, indent=1, sort_keys=True, default=str)
        if not self.storage.is_local:
            self.storage.upload_dir(directory, rel, skip={CHECKPOINTS})
            self.storage.write_text(f"{rel}/{MARKER}", text)  # the remote marker, last
        write_json_atomic(directory / MARKER, marker)
