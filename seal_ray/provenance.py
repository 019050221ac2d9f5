"""Where a result came from: package version, git commit, config hash, device, workers."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from seal_ray import __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout this package runs from ('unknown' for an installed copy)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5)
        return commit + ("-dirty" if commit != "unknown" and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(config_hash: str, seed: int, device: str, workers: int) -> dict[str, object]:
    return {
        "prov/version": __version__,
        "prov/git_commit": git_commit(),
        "prov/config_hash": config_hash,
        "prov/seed": seed,
        "prov/device": device,
        "prov/workers": workers,
    }
