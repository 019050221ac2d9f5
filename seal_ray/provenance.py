"""Where a result came from: package version, git commit, source fingerprint, library versions, config
hash, device, workers.

A sweep submitted with `ray job submit --working-dir .` runs from an uploaded copy without .git
(RAY_NOTES.md, "Cluster"), so the commit is looked up in three places, first found wins: the checkout
this package runs from, else $SEAL_RAY_GIT_COMMIT (set where the sweep was launched: the sweep's
driver passes its own commit on to every trial through the runtime environment, and a job submitter
sets it in the entrypoint), else 'unknown'. The source fingerprint (a hash of the package's own files)
needs neither: it says which code ran even when no commit is known.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from importlib import metadata
from pathlib import Path

from seal_ray import __version__

COMMIT_ENV = "SEAL_RAY_GIT_COMMIT"
PACKAGE_DIR = Path(__file__).resolve().parent
VERSIONED_LIBRARIES = ("torch", "ray", "transformers", "peft")


@functools.lru_cache(maxsize=1)
def checkout_commit() -> str | None:
    """The commit of the git checkout this package runs from (with '-dirty' for local edits), or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PACKAGE_DIR,
                               capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    """The commit of the running code: its checkout, else the launcher's $SEAL_RAY_GIT_COMMIT, else 'unknown'."""
    return checkout_commit() or os.environ.get(COMMIT_ENV, "").strip() or "unknown"


def launch_env() -> dict[str, str]:
    """What a sweep's driver passes on to its trials so that rows made from a copy without .git keep the commit."""
    commit = git_commit()
    return {COMMIT_ENV: commit} if commit != "unknown" else {}


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """The fingerprint of the package this process runs."""
    return fingerprint_of(PACKAGE_DIR)


def fingerprint_of(package_dir: Path) -> str:
    """sha256 (16 hex digits) over the relative paths and bytes of a package folder's source files."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """prov/<library> columns, read from the installed distributions (nothing is imported)."""
    versions = {}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[f"prov/{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"prov/{name}"] = "not installed"
    return versions


def provenance(config_hash: str, seed: int, device: str, workers: int) -> dict[str, object]:
    return {
        "prov/version": __version__,
        "prov/git_commit": git_commit(),
        "prov/source_fingerprint": source_fingerprint(),
        **library_versions(),
        "prov/config_hash": config_hash,
        "prov/seed": seed,
        "prov/device": device,
        "prov/workers": workers,
    }
