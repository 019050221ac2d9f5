"""Heavy stages as Ray Train (V2) jobs: one `TorchTrainer` worker group per stage.

`RayTrainExecutor.run` has the interface of `LocalExecutor.run`: the same worker function (stages/*.py)
runs through the same `run_on_worker`, only over `resources.num_workers` workers with
`TorchDist` (gloo on CPU, nccl on GPU; TorchTrainer sets up the process group) instead of `LocalDist`.

- Run name: `<stage>-<stage folder hash>`, never a timestamp, so starting a stage again finds the same
  Ray Train run (RAY_NOTES.md, "Resume").
- Resume: the loops checkpoint every epoch into `<stage folder>/checkpoints` (storage every worker
  sees) and start from the newest file there; `FailureConfig(max_failures)` restarts a lost worker
  group, which then logs "[stage] resuming from the checkpoint after epoch N". Nothing is reported
  to Ray Train as a checkpoint: the stage folder is the single source of truth, also for the
  single-process path and for a stage restarted by a new driver.
- Result: rank 0's return value comes back as `Result.return_value` (Train V2); the other ranks return
  None, so a return value that was not rank 0's would fail loudly here.
- Logs: rank 0 appends its log lines to `<stage folder>/worker.log`; the driver tails that file into
  its own `log` while the group runs (a restarted group appends, so the resume line shows up).
- SEAL_RAY_* variables of the driver (fault injection, faults.py) are passed on to the workers.

One worker group per stage, not one per cell (decided by measurement, benchmarks/train_overhead.py):
on this 2-CPU machine a 1-worker group costs ~16 s to start and tear down, while the training loop
inside it keeps 0.98 of the plain loop's throughput (same weights, bit for bit). A stage of real size
(minutes to hours on GPUs) makes 10-30 s per stage negligible, while a group per stage keeps what a
shared group would lose: each stage is cached, resumed and sized (workers, GPUs) on its own, and a
cell whose early stages are cached starts no group for them. On the mini world, where a whole
default cell takes under 2 minutes, the overhead is not worth paying: sweep.py runs 1-CPU-worker
cells inline (LocalExecutor) and uses this executor for several workers or GPUs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from seal_ray.background import repeating
from seal_ray.errors import StageFailed
from seal_ray.executor import WorkerFn, run_on_worker

WORKER_LOG = "worker.log"
FORWARDED_ENV_PREFIX = "SEAL_RAY_"


def train_fn_per_worker(config: dict) -> dict | None:
    """What each Ray Train worker runs: the stage's worker function over the group's process group."""
    import ray.train.torch

    from seal_ray.distributed import TorchDist

    device = ray.train.torch.get_device()  # [1] this worker's device: cpu, or its cuda:<local rank>
    dist = TorchDist(device)  # [2] collectives over the process group TorchTrainer already set up
    work_dir = Path(config["work_dir"])
    log = _append_to(work_dir / WORKER_LOG) if dist.is_main else _discard
    result = run_on_worker(config["worker_fn"], config["spec"], dist, work_dir / "checkpoints", log)
    return result if dist.is_main else None  # [3] Result.return_value carries rank 0's value


class RayTrainExecutor:
    """Runs a heavy stage as a Ray Train job over `num_workers` workers (interface of LocalExecutor)."""

    name = "ray_train"

    def __init__(self, *, num_workers: int = 1, use_gpu: bool = False, cpus_per_worker: float = 1.0,
                 max_failures: int = 2, storage_path: str | Path):
        self.num_workers = num_workers
        self.use_gpu = use_gpu
        self.cpus_per_worker = cpus_per_worker
        self.max_failures = max_failures
        self.storage_path = Path(storage_path).absolute()

    @classmethod
    def from_config(cls, resources, *, storage_path: str | Path) -> "RayTrainExecutor":
        """From a cell's ResourcesConfig."""
        return cls(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                   cpus_per_worker=resources.cpus_per_worker, max_failures=resources.max_failures,
                   storage_path=storage_path)

    @staticmethod
    def run_name(stage: str, work_dir: Path) -> str:
        # The stage folder is stages/<stage>/<content hash>: the same stage always gets the same name.
        return f"{stage}-{Path(work_dir).name}"

    def run(self, stage: str, worker_fn: WorkerFn, spec: dict, work_dir: Path, log) -> dict[str, Any]:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        work_dir = Path(work_dir)
        name = self.run_name(stage, work_dir)
        self.storage_path.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
        trainer = TorchTrainer(
            train_loop_per_worker=train_fn_per_worker,  # [4] the same loop code as the single-process path
            train_loop_config={"worker_fn": worker_fn, "spec": spec, "work_dir": str(work_dir)},
            scaling_config=ScalingConfig(  # [5] sized from the cell's ResourcesConfig; gloo on CPU, nccl on GPU
                num_workers=self.num_workers, use_gpu=self.use_gpu,
                resources_per_worker={"CPU": self.cpus_per_worker},
            ),
            run_config=RunConfig(
                name=name,  # [6] deterministic, so a restarted stage finds the same run
                storage_path=str(self.storage_path),
                failure_config=FailureConfig(max_failures=self.max_failures),  # [7] restart a lost group
                worker_runtime_env={"env_vars": env} if env else None,
            ),
        )
        log(f"[{stage}] Ray Train run {name}: {self.num_workers} worker(s), "
            f"{'GPU' if self.use_gpu else 'CPU'}, max_failures {self.max_failures}")
        started = time.perf_counter()
        with _Tail(work_dir / WORKER_LOG, log):
            try:
                result = trainer.fit()  # [8] blocks until the group finishes (after restarts) or gives up
            except Exception as err:  # noqa: BLE001 - a ray.train.TrainingFailedError, mostly
                raise _as_stage_failure(stage, err) from err
        fit_s = time.perf_counter() - started
        value = result.return_value  # [9] rank 0's returned dict (Train V2)
        if not isinstance(value, dict):
            raise RuntimeError(f"[{stage}] Ray Train run {name} returned {value!r}, not rank 0's result")
        overhead = max(0.0, fit_s - float(value["measure"]["seconds"]))
        value["ray_train"] = {"run": name, "fit_s": fit_s, "overhead_s": overhead}
        log(f"[{stage}] Ray Train run {name} done in {fit_s:.1f} s ({overhead:.1f} s outside the training loop)")
        return value


def _as_stage_failure(stage: str, err: Exception) -> Exception:
    """A StageFailed raised in a worker (e.g. a NaN loss) stays a StageFailed for the sweep's table."""
    for failure in getattr(err, "worker_failures", {}).values():
        cause = getattr(failure, "_base_exc", failure)  # Ray wraps user exceptions with their traceback
        if isinstance(cause, StageFailed):
            return StageFailed(str(cause))
    return StageFailed(f"[{stage}] Ray Train gave up: {err}")


def _discard(line: str) -> None:
    pass


def _append_to(path: Path) -> Callable[[str], None]:
    def log(line: str) -> None:
        with open(path, "a") as handle:
            handle.write(line + "\n")

    return log


class _Tail:
    """Forwards the lines appended to a file into `log`, while a block runs and once more at its end."""

    def __init__(self, path: Path, log: Callable[[str], None], every_s: float = 0.5):
        self.path, self.log = path, log
        self._offset = path.stat().st_size if path.exists() else 0
        self._repeat = repeating(every_s, self._pump, name=f"tail {path.name}")

    def __enter__(self) -> "_Tail":
        self._repeat.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._repeat.__exit__(None, None, None)
        self._pump()

    def _pump(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next pump
        self._offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            self.log(line)
