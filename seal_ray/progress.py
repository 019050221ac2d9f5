"""The live progress display of a sweep: cells done / running / failed / cached and an ETA."""

from __future__ import annotations

import time
from typing import Callable

from ray.tune import Callback


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class SweepProgress(Callback):
    def __init__(self, total: int, concurrency: int, log: Callable[[str], None]):
        self.total, self.concurrency, self.log = total, max(1, concurrency), log
        self.start = time.time()
        self.running: dict[str, float] = {}
        self.durations: list[float] = []
        self.done = self.failed = self.cached = 0
        self.heartbeat_s = 30.0
        self._last_line = time.time()

    def line(self) -> str:
        self._last_line = time.time()
        finished = self.done + self.failed
        elapsed = time.time() - self.start
        remaining = self.total - finished
        if self.durations and remaining:
            mean = sum(self.durations) / len(self.durations)
            eta = f"ETA {_clock(mean * remaining / self.concurrency)}"
        else:
            eta = "ETA --:--" if remaining else "finished"
        return (f"[{finished:>3}/{self.total}] done {self.done} ({self.cached} cached) | running {len(self.running)} | "
                f"failed {self.failed} | elapsed {_clock(elapsed)} | {eta}")

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
        elif result.get("cell/ok") == 0:
            self.failed += 1

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += 1
        self._finish(trial)

    def _finish(self, trial) -> None:
        started = self.running.pop(trial.trial_id, None)
        if started is not None:
            self.durations.append(time.time() - started)
        self.log(self.line())
