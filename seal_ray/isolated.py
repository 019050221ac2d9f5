"""Run heavy stages each in a fresh process, forked from a warm stage server: `python -m seal_ray.isolated`.

Why a fresh process: on CPU a stage's memory figure is its peak RSS above its baseline, and a process
that already ran a stage has one-time library allocations and freed heap that hide part of the next
stage's memory. A fresh process per stage (as Ray Train workers are) makes the figures comparable
across cells.

Why forked from a server: starting Python and importing torch and transformers costs seconds, a
quarter of a fine-tuning stage on the mini world. The server pays that once: it imports the stage
modules, runs no computation (no torch thread pool, no CUDA: forking after either is unsafe) and
then forks one child per stage. Each child starts from the same imported-but-idle state, runs one
stage and exits, so every stage still gets a process of its own and its memory figure is measured
the same way for every cell (StageMeter: peak RSS above the baseline at the stage's start).

Protocol (one stage at a time): the parent writes one JSON request per line on the server's stdin
(worker, spec, device, checkpoint_dir, result_path, the parent's environment and working directory);
the child's log lines come on the server's stdout, then the server writes `SENTINEL <exit code>`.
The result is a JSON file (no pickle) at result_path.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

from seal_ray.distributed import LocalDist
from seal_ray.errors import StageFailed

EXIT_STAGE_FAILED = 3
SENTINEL = "\x1eseal-ray-stage-exit"
# Imported once by the server, so that a forked child starts with them loaded.
PRELOAD = ("torch", "transformers", "safetensors.torch", "seal_ray.executor", "seal_ray.stages.base", "seal_ray.stages.selector",
           "seal_ray.stages.finetune", "seal_ray.stages.generate", "transformers.models.llama.modeling_llama")


def worker_reference(worker_fn) -> str:
    return f"{worker_fn.__module__}:{worker_fn.__name__}"


def resolve_worker(reference: str):
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def run_request(request: dict) -> int:
    """Run one stage in this process; its outcome goes to request['result_path']. Returns the exit code."""
    from seal_ray.executor import run_on_worker

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


def _child(request: dict) -> None:
    """The forked child: the parent's environment and directory, one stage, then exit without cleanup."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(request.get("env", {}))
        os.chdir(request.get("cwd", "."))
        code = run_request(request)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # not the server's atexit handlers or buffers


def exit_code(status: int) -> int:
    """waitpid's status as subprocess reports it: the exit code, or minus the signal that killed it."""
    return os.waitstatus_to_exitcode(status)


def serve() -> int:
    for module in PRELOAD:
        importlib.import_module(module)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        print(f"{SENTINEL} {exit_code(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
