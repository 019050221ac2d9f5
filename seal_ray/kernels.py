"""The CPU kernels that stages compute with: pinned to AVX2 on x86, so every machine trains the same draw.

torch, MKL and oneDNN give different float results on AVX2 and on AVX-512, and 20 epochs of base
training turn that difference into another draw of the world's one base model (docs/calibration.md).
The world passes its calibration on every draw tried, but its numbers are those of the draw: these
variables hold every x86 CPU to the AVX2 one, so two machines give the same results, and training runs
at the same speed on this development machine. A process must have them before its first torch
computation, so they go into the environment of the stage server and of its stage processes, and into
the sweep's Ray job (`ray.init`'s runtime_env), whose workers, Ray Train's included, start with them.
A variable that is already set is kept. `SEAL_RAY_KERNELS=native` adds none, so processes use the
machine's own kernels (note that `ATEN_CPU_CAPABILITY=default` is torch's scalar fallback, not the
native choice). Importing seal_ray pins the importing process as well (`pin_this_process`), so stages
run in it (`resources.isolate_stages: false`) train the same draw; that takes effect only if the process
has not computed with torch yet (torch reads the variables on its first computation).
"""

from __future__ import annotations

import os
import platform

from seal_ray.errors import UserError

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SWITCH = "SEAL_RAY_KERNELS"  # "native": no pins


def kernel_env() -> dict[str, str]:
    """The variables to give a process that will import torch; empty off x86 or with SEAL_RAY_KERNELS=native."""
    choice = os.environ.get(SWITCH, "pinned")
    if choice not in ("pinned", "native"):
        raise UserError(f"environment variable {SWITCH}={choice!r}: allowed values are 'pinned' (the default) and 'native'")
    if choice == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: os.environ.get(name, value) for name, value in PINNED.items()}


def pin_this_process() -> None:
    """Put the pins into this process's environment (and so its children's); a bad SEAL_RAY_KERNELS is
    left for kernel_env's callers to report (an import must not raise)."""
    try:
        os.environ.update(kernel_env())
    except UserError:
        pass
