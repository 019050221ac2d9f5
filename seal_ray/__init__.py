"""seal_ray: SEAL ablation studies as distributed sweeps."""

__version__ = "0.1.0"
