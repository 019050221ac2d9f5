"""seal_ray: SEAL ablation studies as distributed sweeps."""

from seal_ray.kernels import pin_this_process

__version__ = "0.1.0"

# Stages that run in this process (resources.isolate_stages: false) compute with the same pinned kernels too.
pin_this_process()
