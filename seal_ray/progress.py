"""The Tune callbacks of a sweep: the live progress display (cells done / running / failed / cached,
an ETA) and the record of trials lost with their node or worker process."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Callable, Iterator

from ray.tune import Callback

from seal_ray.results import read_record, write_record
from seal_ray.storage import Storage

NODE_LOST, WORKER_DIED = "node lost", "worker died"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class SweepProgress(Callback):
    def __init__(self, total: int, concurrency: int, log: Callable[[str], None]):
        self.total, self.concurrency, self.log = total, max(1, concurrency), log
        self.start = time.time()
        self.running: dict[str, float] = {}
        self.durations: list[float] = []
        self.done = self.failed = self.cached = self.interrupted = self.retried = 0
        self.heartbeat_s = 30.0
        self._last_line = time.time()

    def line(self) -> str:
        self._last_line = time.time()
        finished = self.done + self.failed + self.interrupted
        elapsed = time.time() - self.start
        remaining = self.total - finished
        if self.durations and remaining:
            mean = sum(self.durations) / len(self.durations)
            eta = f"ETA {_clock(mean * remaining / self.concurrency)}"
        else:
            eta = "ETA --:--" if remaining else "finished"
        lost = f" | interrupted {self.interrupted}" if self.interrupted else ""
        retried = f" | retried {self.retried}" if self.retried else ""
        return (f"[{finished:>3}/{self.total}] done {self.done} ({self.cached} cached) | running {len(self.running)} | "
                f"failed {self.failed}{lost}{retried} | elapsed {_clock(elapsed)} | {eta}")

    def on_step_end(self, iteration, trials, **info):
        # A heartbeat while cells run for minutes without starting or finishing.
        if time.time() - self._last_line >= self.heartbeat_s:
            self.log(self.line())

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = time.time()
        self.log(self.line())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("cell/ok") == 1:
            self.done += 1
            self.cached += int(bool(result.get("cell/all_stages_cached")))
        elif result.get("cell/interrupted"):
            self.interrupted += 1
        elif result.get("cell/ok") == 0:
            self.failed += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.retried += 1
        self.running.pop(trial.trial_id, None)  # it starts again (on_trial_start)

    def on_trial_error(self, iteration, trials, trial, **info):
        # A cell that raises is recorded and reported by its trial; only a lost trial errors in Tune.
        self.interrupted += 1
        self._finish(trial)

    def _finish(self, trial) -> None:
        started = self.running.pop(trial.trial_id, None)
        if started is not None:
            self.durations.append(time.time() - started)
        self.log(self.line())


def interruption_reason(error: BaseException | str | None, node_gone: Callable[[], bool | None] = lambda: None) -> str:
    """Why a trial was lost, from the error Tune got: 'node lost', 'worker died', or 'trial error: <type>'.

    A trial whose process can no longer be reached (Ray's ActorUnavailableError is what a killed raylet
    gives) may have lost its node or only its process: `node_gone()` says which (True: the node is dead;
    None: unknown, counted as the process)."""
    text = str(error or "")
    name = type(error).__name__ if isinstance(error, BaseException) else ""
    if getattr(error, "preempted", False) or "node has died" in text or name == "NodeDiedError":
        return NODE_LOST
    process_lost = name in ("ActorUnavailableError", "ActorDiedError", "WorkerCrashedError", "RayActorError") or any(
        words in text for words in ("actor is unavailable", "temporarily unavailable", "worker process has died"))
    # Tune may not have stored the error yet when it calls back (error None): the node's state still tells.
    if (process_lost or error is None) and node_gone():
        return NODE_LOST
    if process_lost:
        return WORKER_DIED
    return f"trial error: {name}" if name else "trial error"


def node_gone(node_id: str | None, wait_s: float = 30.0) -> Callable[[], bool | None]:
    """For interruption_reason: whether Ray marks `node_id` dead within `wait_s` (a raylet killed a moment
    ago is still listed as alive until the GCS misses its heartbeats)."""

    def check() -> bool | None:
        import ray

        if not node_id or not ray.is_initialized():
            return None
        deadline = time.time() + wait_s
        while True:
            alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
            if not alive.get(node_id, False):
                return True
            if time.time() > deadline:
                return False
            time.sleep(1.0)

    return check


class RecordInterruptions(Callback):
    """Writes each lost trial into its cell's record (`interruptions`: reason, time, run) as Tune retries
    it, and marks the record 'interrupted' when Tune gives up, so no record says 'running' afterwards."""

    def __init__(self, folder: Storage, table: dict[str, dict], run_id: str, log: Callable[[str], None]):
        self.folder, self.table, self.run_id, self.log = folder, table, run_id, log

    def on_trial_recover(self, iteration, trials, trial, **info):
        entry, lost = self._note(trial)
        self.log(f"cell {entry['cell_id']} seed {entry['seed']}: trial lost ({lost[-1]['reason']}); "
                 f"starting it again from its completed stages (retry {len(lost)})")

    def on_trial_error(self, iteration, trials, trial, **info):
        from seal_ray.config import cell_from_dict
        from seal_ray.sweep import record_interrupted

        entry, lost = self._note(trial)
        budget = cell_from_dict(entry["config"]).resources.max_failures
        record_interrupted(self.folder, entry["cell_id"], entry["seed"], lost, budget)
        self.log(f"cell {entry['cell_id']} seed {entry['seed']}: trial lost ({lost[-1]['reason']}), no retries left; "
                 "recorded as interrupted")

    def _note(self, trial) -> tuple[dict, list[dict]]:
        from seal_ray.sweep import trial_entry

        entry = trial_entry(trial.config, self.table)
        try:
            error = trial.get_pickled_error() or trial.get_error()
        except Exception:  # noqa: BLE001 - the reason is a courtesy; the retry must not fail on it
            error = None
        record = read_record(self.folder, entry["cell_id"], entry["seed"]) or {}
        reason = interruption_reason(error, node_gone(record.get("node_id")))
        lost = [*record.get("interruptions", []), {"reason": reason, "time": time.time(),
                                                   "run": self.run_id, "node_id": record.get("node_id")}]
        write_record(self.folder, entry["cell_id"], entry["seed"], interruptions=lost)
        return entry, [i for i in lost if i.get("run") == self.run_id]


class _DropTrialErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Trial task failed for trial", "Trials did not complete"))


@contextlib.contextmanager
def quiet_tune_errors() -> Iterator[None]:
    """No Tune-internal traceback for a trial that was lost: RecordInterruptions says what happened.
    (TUNE_PRINT_ALL_TRIAL_ERRORS is read when the Tuner's controller starts.)"""
    previous = os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS")
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    dropped = _DropTrialErrors()
    loggers = [logging.getLogger(name) for name in ("ray.tune.tune", "ray.tune.execution.tune_controller")]
    for logger in loggers:
        logger.addFilter(dropped)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(dropped)
        if previous is None:
            os.environ.pop("TUNE_PRINT_ALL_TRIAL_ERRORS", None)
        else:
            os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = previous
