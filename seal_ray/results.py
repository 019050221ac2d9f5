"""The results store: one record per cell x seed under the sweep's folder, rebuilt into one DataFrame.

    <storage>/sweeps/<name>/manifest.json          every cell x seed the sweep asked for
    <storage>/sweeps/<name>/cells/<cell>-s<seed>.json   its record: status, error, metrics, timings

Records are written atomically by the cell's driver, so the DataFrame can be read while a sweep runs,
after a crash, or on a laptop with no Ray running. Columns: docs/results_schema.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from seal_ray.config import flatten
from seal_ray.errors import UserError
from seal_ray.store import write_json_atomic

STATUSES = ("done", "failed", "running", "missing")


def sweep_dir(storage: str | Path, name: str) -> Path:
    return Path(storage) / "sweeps" / name


def record_path(directory: Path, cell_id: str, seed: int) -> Path:
    return directory / "cells" / f"{cell_id}-s{seed}.json"


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        return {"name": directory.name, "cells": {}, "entries": []}
    return json.loads(path.read_text())


def write_record(directory: Path, cell_id: str, seed: int, **fields: Any) -> None:
    path = record_path(directory, cell_id, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    write_json_atomic(path, {**previous, "cell_id": cell_id, "seed": seed, "updated": time.time(), **fields})


def read_record(directory: Path, cell_id: str, seed: int) -> dict[str, Any] | None:
    path = record_path(directory, cell_id, seed)
    return json.loads(path.read_text()) if path.is_file() else None


def resolve(name_or_path: str | Path, storage: str | Path = "runs") -> Path:
    """A sweep folder from its path, or from its name under the storage root."""
    candidate = Path(name_or_path)
    for directory in (candidate, sweep_dir(storage, str(name_or_path))):
        if (directory / "manifest.json").is_file():
            return directory
    raise UserError(f"no sweep at '{name_or_path}' (looked for {candidate}/manifest.json and "
                    f"{sweep_dir(storage, str(name_or_path))}/manifest.json)")


def load(path: str | Path, storage: str | Path = "runs") -> pd.DataFrame:
    """One row per cell x seed: config leaves (config/...), metrics, status, error, provenance."""
    directory = resolve(path, storage)
    manifest = read_manifest(directory)
    rows = []
    for entry in manifest["entries"]:
        cell = manifest["cells"][entry["cell_id"]]
        record = read_record(directory, entry["cell_id"], entry["seed"]) or {}
        config = dict(cell["config"], seed=entry["seed"])
        row: dict[str, Any] = {
            "sweep": manifest["name"], "cell_id": entry["cell_id"], "label": cell["label"],
            "studies": ",".join(cell.get("studies", [])), "seed": entry["seed"],
            "status": record.get("status", "missing"), "error": record.get("error", ""),
            "started": record.get("started"), "finished": record.get("finished"),
            "cell_seconds": record.get("seconds"),
        }
        row.update({f"config/{k}": _cell_value(v) for k, v in flatten(config).items()})
        row.update(record.get("metrics", {}))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["label", "seed"], kind="stable").reset_index(drop=True)
    return frame


def _cell_value(value: Any) -> Any:
    # Lists (betas, target modules, test sets) become strings so every column stays hashable.
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    if not frame.empty:
        counts.update(frame["status"].value_counts().to_dict())
    return counts
