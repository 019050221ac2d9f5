"""Peak memory and wall time of a stage, per worker (RAY_NOTES.md, "Memory figures").

GPU: torch.cuda.max_memory_allocated, reset at the stage start. CPU: the process's peak RSS above its
baseline at the stage start; on Linux the peak (VmHWM) is reset through /proc/self/clear_refs and freed
heap is first returned to the OS (malloc_trim), so the figure belongs to this stage and not to an
earlier one in the same process.

The training loops also report what they did (`record_loop`): their own wall time and the tokens they
computed, padding included, so a stage's figures separate its loop from its set-up and show how much
of the computation was padding. The record is per process and reset when a StageMeter starts.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import time
from pathlib import Path

import torch


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand freed heap back to the OS, so a stage's RSS baseline does not hide memory an earlier stage
    of the same process freed (the allocator would reuse it without the RSS growing)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


_loop = {"seconds": 0.0, "computed_tokens": 0}


def record_loop(seconds: float, computed_tokens: int) -> None:
    """A training loop of the current stage ran `seconds` and computed this many tokens (padding included)."""
    _loop["seconds"] += seconds
    _loop["computed_tokens"] += computed_tokens


class StageMeter:
    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.kind = "cuda" if self.device.type == "cuda" else "cpu"

    def __enter__(self) -> "StageMeter":
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_memory()
            self._can_reset = _reset_peak_rss()
            self._baseline = (_status_kb("VmRSS") or 0) * 1024
        _loop.update(seconds=0.0, computed_tokens=0)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        self.peak_mb = self._peak_bytes() / 2**20
        self.loop_seconds = _loop["seconds"]
        self.computed_tokens = _loop["computed_tokens"]

    def _peak_bytes(self) -> float:
        if self.kind == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device))
        peak_kb = _status_kb("VmHWM") if self._can_reset else None
        if peak_kb is None:  # no resettable peak: ru_maxrss is the process's lifetime peak
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0.0, peak_kb * 1024 - self._baseline)
