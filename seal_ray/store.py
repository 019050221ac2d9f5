"""The stage cache: `<storage>/stages/<stage>/<hash>/`, complete only once its marker exists.

The marker `_COMPLETE.json` is written last and atomically, so a folder left half-written by a crash
is never read as complete: the next run clears it and computes again, keeping `checkpoints/` so a
training stage resumes from its last epoch. The storage may be a local or NFS folder, or a cloud URI
(storage.py: objects, and a local mirror of the stage folders on each machine).

What is guaranteed when several processes need the same missing stage at once:
- Never a failed cell from the race: one computes, every other waits ("being computed by another
  process; waiting for it") and then reuses it; if the one computing fails, a waiter computes it.
- Never two processes writing one folder: a local folder, or a machine's mirror of a cloud one, is
  computed into (or downloaded into) only under an exclusive flock on `<hash>.lock` beside it,
  whatever happens to the lease below.
- On a local or NFS folder the flock is the lock, so the stage is computed exactly once.
- On S3, the machines also race for a lease object `locks/<stage>/<hash>.lock` (lease.py), created
  with a conditional PUT (`If-None-Match: *`) that exactly one wins, refreshed while held and taken
  over only when its holder stopped refreshing it for LEASE_S: the stage is computed exactly once.
- On a store without conditional writes (gs:// through pyarrow) the lease is written and read back:
  best effort. Two machines racing within one round trip may both compute the stage; each uploads
  whole files and the marker last, so it is never corrupt, and each computes in its own mirror.
"""

from __future__ import annotations

import contextlib
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
from seal_ray.lease import lease
from seal_ray.storage import Storage, folder_lock

MARKER = "_COMPLETE.json"
CHECKPOINTS = "checkpoints"
KEEP_ON_RETRY = {CHECKPOINTS}


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
        """This machine's flock on the stage folder, then (on a cloud URI) the lease shared by all machines."""
        waiting = f"[{stage}] {key_hash} is being computed by another process; waiting for it"
        announced = []

        def on_wait() -> None:
            if not announced:
                log(waiting)
                announced.append(True)

        shared = contextlib.nullcontext() if self.storage.is_local else \
            lease(self.storage, f"locks/{stage}/{key_hash}.lock", on_wait, log)
        with folder_lock(self.stage_dir(stage, key_hash), on_wait), shared:
            yield

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
