"""Fault injection for the reliability tests: kill or fail a stage at a chosen epoch and step.

SEAL_RAY_FAULT="<stage>@<epoch>.<step>=<kind>" (0-based epoch and step; kind: kill | raise) fires once:
SEAL_RAY_FAULT_ONCE names a marker file created when it fires, so a restarted worker runs on.
"""

from __future__ import annotations

import os
from pathlib import Path

from seal_ray.errors import StageFailed


def maybe_inject_fault(stage: str, epoch: int, step: int) -> None:
    spec = os.environ.get("SEAL_RAY_FAULT")
    if not spec:
        return
    where, _, kind = spec.partition("=")
    if where != f"{stage}@{epoch}.{step}":
        return
    marker = os.environ.get("SEAL_RAY_FAULT_ONCE")
    if marker:
        if Path(marker).exists():
            return
        Path(marker).write_text(spec)
    if kind == "kill":
        os._exit(17)  # a lost worker: no cleanup, no exception handler runs
    raise StageFailed(f"injected fault in stage {stage} at epoch {epoch + 1}, step {step + 1}")
