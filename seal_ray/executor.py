"""How a heavy stage's worker function runs: here in one process, or in a Ray Train worker group.

A worker function has the signature `fn(spec, dist, checkpointer, log) -> dict`; `spec` is plain
data (picklable), `dist` the collectives. `run_on_worker` wraps it with the stage's measurements,
reduced over workers: peak memory with MAX, wall time with MAX, tokens with SUM. Tokens are the
non-padding tokens a stage trained on (or generated); `tokens_per_s` divides them by the stage's wall
time, set-up included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from seal_ray.checkpoints import Checkpointer
from seal_ray.distributed import LocalDist
from seal_ray.kernels import kernel_env
from seal_ray.measure import StageMeter
from seal_ray.storage import Storage
from seal_ray.store import MARKER

WorkerFn = Callable[[dict, LocalDist, Checkpointer, Callable[[str], None]], dict]


def fetch_inputs(spec: dict) -> None:
    """On cloud storage, a worker on another node downloads the upstream stage folders it reads."""
    if not spec.get("storage_uri"):
        return
    storage = Storage(spec["storage_uri"])
    for name, value in spec.items():
        if name.endswith("_dir") and name != "work_dir":
            storage.ensure_local(Path(value).relative_to(storage.local_root).as_posix(), MARKER)


def run_on_worker(worker_fn: WorkerFn, spec: dict, dist: LocalDist, checkpoint_dir: Path | None, log) -> dict[str, Any]:
    torch.set_num_threads(int(spec.get("torch_threads", 1)))
    fetch_inputs(spec)
    checkpointer = Checkpointer(checkpoint_dir, dist, mirror_uri=spec.get("checkpoint_uri"))
    with StageMeter(dist.device) as meter:
        result = worker_fn(spec, dist, checkpointer, log)
    summed = dist.all_reduce_sum_(torch.tensor([float(result.pop("tokens", 0)), float(meter.computed_tokens)],
                                               dtype=torch.float64, device=dist.device))
    tokens, computed = float(summed[0]), float(summed[1])
    seconds = dist.all_reduce_max(meter.seconds)
    measure = {
        "peak_mb": dist.all_reduce_max(meter.peak_mb),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        # Training stages: the loops' own time, and the share of computed tokens that was padding.
        "loop_seconds": dist.all_reduce_max(meter.loop_seconds),
        "tokens": tokens,
        "padding_share": 1.0 - tokens / computed if computed > 0 else 0.0,
        "device": meter.kind,
        "workers": dist.world_size,
    }
    return {**result, "measure": measure}


class _StageServer:
    """One warm stage server process (isolated.py), started on first use and again if it died."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()  # one stage at a time per server

    def get(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([sys.executable, "-m", "seal_ray.isolated"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                            env={**os.environ, **kernel_env()})  # MKL may initialise at import
        return self.process

    def stop(self) -> None:
        """Stop the server (waited for, so its CPU time counts as this process's children's)."""
        process, self.process = self.process, None
        if process is not None:
            process.stdin.close()
            process.wait()
            process.stdout.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


# The server of every `shared_server` executor in this process: a sweep's trial process runs one cell
# after another (Tune reuses its actors), and each would otherwise pay a server start (importing torch
# and transformers, seconds of CPU). It stops when this process exits (its stdin closes).
_PROCESS_SERVER = _StageServer()


class LocalExecutor:
    """The single-process path: the 1-worker case of the same worker functions, no Ray.

    With `isolate`, each heavy stage runs in a fresh process of its own, forked from a warm stage
    server (isolated.py), so its memory figure is comparable with every other cell's; without it,
    everything runs in this process. The server is this executor's own, started once and stopped by
    `close()`; with `shared_server`, it is this process's one server, kept for the next executor.
    """

    name = "local"

    def __init__(self, device: str = "cpu", isolate: bool = False, shared_server: bool = False):
        self.device = device
        self.isolate = isolate
        self.shared_server = shared_server
        self._server = _PROCESS_SERVER if shared_server else _StageServer()

    def run(self, stage: str, worker_fn: WorkerFn, spec: dict, work_dir: Path, log) -> dict[str, Any]:
        if not self.isolate:
            return run_on_worker(worker_fn, spec, LocalDist(self.device), work_dir / "checkpoints", log)
        with self._server.lock:
            return self._run_isolated(stage, worker_fn, spec, work_dir, log)

    def close(self) -> None:
        """Stop this executor's own stage server (a shared one keeps running for the next executor)."""
        if not self.shared_server:
            self._server.stop()

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "shared_server", True):
            self._server.kill()

    def _run_isolated(self, stage: str, worker_fn: WorkerFn, spec: dict, work_dir: Path, log) -> dict[str, Any]:
        import json
        import os
        import tempfile

        from seal_ray.errors import StageFailed
        from seal_ray.isolated import SENTINEL, worker_reference

        with tempfile.TemporaryDirectory(prefix="seal-ray-stage-") as tmp:
            result_path = Path(tmp) / "result.json"
            request = {
                "worker": worker_reference(worker_fn), "spec": spec, "device": self.device,
                "checkpoint_dir": str(work_dir / "checkpoints"), "result_path": str(result_path),
                # what a freshly started process would get, with the pinned CPU kernels (kernels.py)
                "env": {**os.environ, **kernel_env()}, "cwd": os.getcwd(),
            }
            server = self._server.get()
            code = None
            try:
                server.stdin.write(json.dumps(request) + "\n")
                server.stdin.flush()
                for line in server.stdout:
                    if line.startswith(SENTINEL):
                        code = int(line.split()[1])
                        break
                    log(line.rstrip("\n"))
            except BrokenPipeError:
                pass
            if code is None:  # the server itself died: the next stage starts a new one
                self._server.stop()
            outcome = json.loads(result_path.read_text()) if result_path.is_file() else {}
        if "result" in outcome:
            return outcome["result"]
        if "stage_failed" in outcome:
            raise StageFailed(outcome["stage_failed"])
        if "error" in outcome:
            raise RuntimeError(f"[{stage}] the stage raised:\n{outcome['error']}")
        raise StageFailed(f"[{stage}] the stage's process died (exit code {code}); its checkpoints are kept")
