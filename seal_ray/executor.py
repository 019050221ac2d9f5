"""How a heavy stage's worker function runs: here in one process, or in a Ray Train worker group.

A worker function has the signature `fn(spec, dist, checkpointer, log) -> dict`; `spec` is plain
data (picklable), `dist` the collectives. `run_on_worker` wraps it with the stage's measurements,
reduced over workers: peak memory with MAX, wall time with MAX, tokens with SUM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from seal_ray.checkpoints import Checkpointer
from seal_ray.distributed import LocalDist
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
    tokens = float(dist.all_reduce_sum_(torch.tensor([float(result.pop("tokens", 0))], dtype=torch.float64, device=dist.device))[0])
    seconds = dist.all_reduce_max(meter.seconds)
    measure = {
        "peak_mb": dist.all_reduce_max(meter.peak_mb),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "device": meter.kind,
        "workers": dist.world_size,
    }
    return {**result, "measure": measure}


class LocalExecutor:
    """The single-process path: the 1-worker case of the same worker functions, no Ray.

    With `isolate`, each heavy stage runs in a fresh Python process (isolated.py), so its memory
    figure is comparable with every other cell's; without it, everything runs in this process.
    """

    name = "local"

    def __init__(self, device: str = "cpu", isolate: bool = False):
        self.device = device
        self.isolate = isolate

    def run(self, stage: str, worker_fn: WorkerFn, spec: dict, work_dir: Path, log) -> dict[str, Any]:
        if not self.isolate:
            return run_on_worker(worker_fn, spec, LocalDist(self.device), work_dir / "checkpoints", log)
        return self._run_isolated(stage, worker_fn, spec, work_dir, log)

    def _run_isolated(self, stage: str, worker_fn: WorkerFn, spec: dict, work_dir: Path, log) -> dict[str, Any]:
        import json
        import subprocess
        import sys
        import tempfile

        from seal_ray.errors import StageFailed
        from seal_ray.isolated import worker_reference

        with tempfile.TemporaryDirectory(prefix="seal-ray-stage-") as tmp:
            request = Path(tmp) / "request.json"
            result_path = Path(tmp) / "result.json"
            request.write_text(json.dumps({
                "worker": worker_reference(worker_fn), "spec": spec, "device": self.device,
                "checkpoint_dir": str(work_dir / "checkpoints"), "result_path": str(result_path),
            }))
            process = subprocess.Popen([sys.executable, "-m", "seal_ray.isolated", str(request)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in process.stdout:
                log(line.rstrip("\n"))
            code = process.wait()
            outcome = json.loads(result_path.read_text()) if result_path.is_file() else {}
        if "result" in outcome:
            return outcome["result"]
        if "stage_failed" in outcome:
            raise StageFailed(outcome["stage_failed"])
        if "error" in outcome:
            raise RuntimeError(f"[{stage}] the stage raised:\n{outcome['error']}")
        raise StageFailed(f"[{stage}] the stage's process died (exit code {code}); its checkpoints are kept")
