"""The results store: one record per cell x seed under the sweep's folder, rebuilt into one DataFrame.

    <storage>/sweeps/<name>/manifest.json          every cell x seed the sweep asks for (and, marked
                                                   retired, those an earlier version of its file asked for)
    <storage>/sweeps/<name>/cells/<cell>-s<seed>.json   its record: status, error, metrics, timings

The storage is a folder or a cloud URI (storage.py). Records are written whole (rename or object PUT)
by the cell's driver, so the DataFrame can be read while a sweep runs, after a crash, or on a laptop
with no Ray running. Columns: docs/results_schema.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from seal_ray.config import flatten
from seal_ray.errors import UserError
from seal_ray.storage import Storage

STATUSES = ("done", "failed", "interrupted", "running", "missing")
UNFINISHED = ("interrupted", "running", "missing")  # `sweep resume` finishes these
RETIRED = "retired"  # a manifest entry the sweep file no longer asks for: kept, out of tables and exit codes


def sweep_folder(storage: str | Path, name: str) -> Storage:
    return Storage(storage).child(f"sweeps/{name}")


def record_rel(cell_id: str, seed: int) -> str:
    return f"cells/{cell_id}-s{seed}.json"


def read_manifest(folder: Storage) -> dict[str, Any]:
    text = folder.read_text("manifest.json")
    return json.loads(text) if text else {"name": Path(folder.uri).name, "cells": {}, "entries": []}


def write_record(folder: Storage, cell_id: str, seed: int, **fields: Any) -> None:
    previous = read_record(folder, cell_id, seed) or {}
    record = {**previous, "cell_id": cell_id, "seed": seed, "updated": time.time(), **fields}
    folder.write_text(record_rel(cell_id, seed), json.dumps(record, indent=1, sort_keys=True, default=str))


def read_record(folder: Storage, cell_id: str, seed: int) -> dict[str, Any] | None:
    text = folder.read_text(record_rel(cell_id, seed))
    return json.loads(text) if text else None


def resolve(name_or_path: str | Path, storage: str | Path = "runs") -> Storage:
    """A sweep folder from its path or URI, or from its name under the storage root."""
    candidates = [Storage(name_or_path), sweep_folder(storage, str(name_or_path))]
    for folder in candidates:
        if folder.exists("manifest.json"):
            return folder
    raise UserError(f"no sweep at '{name_or_path}' (looked for {candidates[0].uri}/manifest.json and "
                    f"{candidates[1].uri}/manifest.json)")


def load(path: str | Path, storage: str | Path = "runs", *, include_retired: bool = False) -> pd.DataFrame:
    """One row per cell x seed: config leaves (config/...), metrics, status, error, provenance.

    include_retired: also the cells x seeds an earlier version of the sweep file asked for and the
    current one does not (status `retired`, the date in `retired`), with their metrics.
    """
    folder = resolve(path, storage)
    manifest = read_manifest(folder)
    rows = []
    for entry in manifest["entries"]:
        retired = entry.get("status") == RETIRED
        if retired and not include_retired:
            continue
        cell = manifest["cells"][entry["cell_id"]]
        record = read_record(folder, entry["cell_id"], entry["seed"]) or {}
        config = dict(cell["config"], seed=entry["seed"])
        row: dict[str, Any] = {
            "sweep": manifest["name"], "cell_id": entry["cell_id"], "label": cell["label"],
            "studies": ",".join(cell.get("studies", [])), "seed": entry["seed"],
            "status": RETIRED if retired else record.get("status", "missing"), "error": record.get("error", ""),
            "started": record.get("started"), "finished": record.get("finished"),
            "cell_seconds": record.get("seconds"),
            "interruptions": len(record.get("interruptions", [])),
            "interrupted_by": ", ".join(i["reason"] for i in record.get("interruptions", [])),
        }
        if include_retired:
            row["retired"] = entry.get("retired", "")
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


def sweep_outcome(frame: pd.DataFrame) -> str:
    """'done' (every cell x seed done), 'failed' (the others done) or 'interrupted' (some not finished:
    `sweep resume` finishes them)."""
    if frame.empty:
        return "done"
    if frame["status"].isin(UNFINISHED).any():
        return "interrupted"
    return "failed" if (frame["status"] == "failed").any() else "done"
