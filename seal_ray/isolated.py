"""Run one heavy stage in a fresh process: `python -m seal_ray.isolated REQUEST.json`.

Why: on CPU a stage's memory figure is its peak RSS above its baseline, and a process that already ran
a stage has one-time library allocations and freed heap that hide part of the next stage's memory. A
fresh process per stage (as Ray Train workers are) makes the figures comparable across cells. The
request and result are JSON (no pickle); log lines go to stdout, which the parent forwards.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

from seal_ray.distributed import LocalDist
from seal_ray.errors import StageFailed

EXIT_STAGE_FAILED = 3


def worker_reference(worker_fn) -> str:
    return f"{worker_fn.__module__}:{worker_fn.__name__}"


def resolve_worker(reference: str):
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def main(request_path: str) -> int:
    from seal_ray.executor import run_on_worker

    request = json.loads(Path(request_path).read_text())
    result_path = Path(request["result_path"])

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_on_worker(resolve_worker(request["worker"]), request["spec"], LocalDist(request["device"]),
                               Path(request["checkpoint_dir"]), log)
    except StageFailed as err:
        result_path.write_text(json.dumps({"stage_failed": str(err)}))
        return EXIT_STAGE_FAILED
    except BaseException:  # noqa: BLE001 - the parent re-raises it with this text
        result_path.write_text(json.dumps({"error": traceback.format_exc()}))
        return 1
    result_path.write_text(json.dumps({"result": result}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
