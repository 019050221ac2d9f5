"""The stage cache: `<storage>/stages/<stage>/<hash>/`, complete only once its marker exists.

The marker `_COMPLETE.json` is written last and atomically (write aside, then rename), so a folder
left half-written by a crash is never read as complete: the next run clears it and computes again
(keeping `checkpoints/`, so a training stage resumes from its last epoch). Two processes that need
the same missing stage serialise on an exclusive lock file: one computes, the others wait and reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from seal_ray.config import stable_hash

MARKER = "_COMPLETE.json"
KEEP_ON_RETRY = {"checkpoints"}


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
        self.root = Path(root)

    def stage_dir(self, stage: str, key_hash: str) -> Path:
        return self.root / "stages" / stage / key_hash

    def is_complete(self, stage: str, key_hash: str) -> bool:
        return (self.stage_dir(stage, key_hash) / MARKER).is_file()

    def meta(self, stage: str, key_hash: str) -> dict[str, Any]:
        return json.loads((self.stage_dir(stage, key_hash) / MARKER).read_text())

    def _record(self, event: str, stage: str, key_hash: str, cell: str | None) -> None:
        line = json.dumps({"event": event, "stage": stage, "hash": key_hash, "cell": cell, "time": time.time(), "host": socket.gethostname()})
        self.root.mkdir(parents=True, exist_ok=True)
        # O_APPEND writes of one short line are atomic, so concurrent cells never interleave lines.
        with open(self.root / "stage_events.jsonl", "a") as events:
            events.write(line + "\n")

    def events(self) -> list[dict[str, Any]]:
        path = self.root / "stage_events.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @contextlib.contextmanager
    def _lock(self, stage: str, key_hash: str, log: Callable[[str], None]) -> Iterator[None]:
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
        directory = self.stage_dir(stage, key_hash)
        if not self.is_complete(stage, key_hash):
            with self._lock(stage, key_hash, log):
                if not self.is_complete(stage, key_hash):
                    self._prepare(directory)
                    write_json_atomic(directory / "key.json", key)
                    log(f"[{stage}] computing {key_hash}")
                    started = time.perf_counter()
                    meta = compute(directory)
                    write_json_atomic(directory / MARKER, {"stage": stage, "hash": key_hash, "finished": time.time(),
                                                           "seconds": time.perf_counter() - started, **meta})
                    self._record("computed", stage, key_hash, cell)
                    return StageResult(stage, key_hash, directory, self.meta(stage, key_hash), cached=False)
        self._record("reused", stage, key_hash, cell)
        log(f"[{stage}] reusing {key_hash}")
        return StageResult(stage, key_hash, directory, self.meta(stage, key_hash), cached=True)

    @staticmethod
    def _prepare(directory: Path) -> None:
        """Clear what an interrupted attempt left, except its checkpoints."""
        directory.mkdir(parents=True, exist_ok=True)
        for entry in directory.iterdir():
            if entry.name in KEEP_ON_RETRY:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
