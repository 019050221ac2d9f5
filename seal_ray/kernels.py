"""The CPU kernels that stages compute with: pinned to AVX2 on x86, so every machine trains the same draw.

torch, MKL and oneDNN give different float results on AVX2 and on AVX-512, and 20 epochs of base
training turn that difference into another draw of the world's one base model (docs/calibration.md).
The world is calibrated on the AVX2 draw. These variables hold every x86 CPU to it, and training runs
at the same speed on this development machine. A process must have them before it imports torch, so
they go into the environment of the stage server and of its stage processes, and into the sweep's Ray
job (`ray.init`'s runtime_env), whose workers, Ray Train's included, start with them.
A variable that is already set is kept: `ATEN_CPU_CAPABILITY=default MKL_CBWR=AUTO
ONEDNN_MAX_CPU_ISA=ALL` asks for the machine's native kernels. Stages run in the caller's own process
(`resources.isolate_stages: false`) use the kernels that process already has.
"""

from __future__ import annotations

import os
import platform

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def kernel_env() -> dict[str, str]:
    """The variables to give a process that will import torch; empty off x86."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {name: os.environ.get(name, value) for name, value in PINNED.items()}
