"""The results store: one record per cell x seed under the sweep's folder, rebuilt into one DataFrame.

    <storage>/sweeps/<name>/manifest.json          every cell x seed the sweep asks for (and, marked
                                                   retired, those an earlier version of its file asked for)
    <storage>/sweeps/<name>/cells/<cell>-s<seed>.json   its record: status, error, metrics, timings
    <storage>/sweeps/<name>/curves/<cell>-s<seed>.jsonl its training curves (curves.py), once it is done
    <storage>/stages/judge/<hash>/prompts.json      per-prompt outcomes of a done cell (load_prompts)

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
from seal_ray.curves import cell_curves_rel, parse_points
from seal_ray.errors import UserError
from seal_ray.storage import Storage

STATUSES = ("done", "failed", "interrupted", "running", "missing")
UNFINISHED = ("interrupted", "running", "missing")  # `sweep resume` finishes these
RETIRED = "retired"  # a manifest entry the sweep file no longer asks for: kept, out of tables and exit codes
# Written by the judge stage: {test_set: [{id, key, category, win, refused?}]}, one record per prompt.
PROMPTS_FILE = "prompts.json"
PROMPT_COLUMNS = ("cell_id", "seed", "test_set", "prompt_id", "prompt_key", "category", "win", "refused")


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


CURVE_COLUMNS = ["cell", "seed", "stage", "step", "metric", "value", "epoch", "kind", "label"]
POINT_FIELDS = ("stage", "kind", "step", "epoch")


def load_curves(path: str | Path, storage: str | Path = "runs", *, stages: list[str] | None = None,
                metrics: list[str] | None = None) -> pd.DataFrame:
    """The training curves of every finished cell x seed as a long DataFrame, one row per value:
    cell (its id), seed, stage, step, metric, value, epoch (0-based), kind ('step' or 'epoch'), label.

    Reads only the sweep folder (no Ray), so it works while the sweep runs: cells not done yet have no rows.
    `stages` and `metrics` keep only those.
    """
    folder = resolve(path, storage)
    manifest = read_manifest(folder)
    rows = []
    for entry in manifest["entries"]:
        cell_id, seed = entry["cell_id"], entry["seed"]
        text = folder.read_text(cell_curves_rel(cell_id, seed))
        if not text:
            continue
        label = manifest["cells"].get(cell_id, {}).get("label", cell_id)
        for point in parse_points(text):
            if stages is not None and point["stage"] not in stages:
                continue
            for metric, value in point.items():
                if metric in POINT_FIELDS or (metrics is not None and metric not in metrics):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append((cell_id, seed, point["stage"], point["step"], metric, float(value),
                                 point.get("epoch"), point.get("kind", "step"), label))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)
def storage_root(folder: Storage) -> Storage:
    """The storage root a sweep folder lives in: sweep folders are always `<root>/sweeps/<name>`."""
    return Storage(folder.local_root.parent.parent if folder.is_local else folder.uri.rsplit("/", 2)[0])


def load_prompts(path: str | Path, storage: str | Path = "runs") -> pd.DataFrame:
    """One row per done cell x seed x judged prompt (PROMPT_COLUMNS), read from each cell's judge stage.

    win is 1 / 0.5 / 0 against the same seed's Standard SFT (NaN: no verdict, and on xstest, which is not
    judged pairwise); refused is 1 / 0 on the hexphi and xstest sets, NaN elsewhere. Cells whose judge
    stage predates prompts.json are absent: the report then falls back to their per-seed values.
    """
    folder = resolve(path, storage)
    root = storage_root(folder)
    frames = []
    for entry in read_manifest(folder)["entries"]:
        record = read_record(folder, entry["cell_id"], entry["seed"]) or {}
        judge = next((stage for stage in record.get("stages", {}) if stage.startswith("judge/")), None)
        text = root.read_text(f"stages/{judge}/{PROMPTS_FILE}") if record.get("status") == "done" and judge else None
        if not text:
            continue
        for test_set, outcomes in json.loads(text).items():
            part = pd.DataFrame(outcomes).rename(columns={"id": "prompt_id", "key": "prompt_key"})
            part = part.assign(cell_id=entry["cell_id"], seed=entry["seed"], test_set=test_set)
            frames.append(part.reindex(columns=list(PROMPT_COLUMNS)))
    if not frames:
        return pd.DataFrame(columns=list(PROMPT_COLUMNS))
    prompts = pd.concat(frames, ignore_index=True)
    prompts["win"] = pd.to_numeric(prompts["win"], errors="coerce").astype(float)
    prompts["refused"] = pd.to_numeric(prompts["refused"], errors="coerce").astype(float)
    return prompts


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
