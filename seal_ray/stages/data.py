"""Stage `data`: the datasets of a cell, as world.json: the mini world drawn from the data seed, or real
datasets read through recipes (data.source 'recipes'; seal_ray/recipes.py, docs/recipes.md).

world.json holds row lists: ft, safe_pool and the test sets (and base, for the mini world). Only the mini
world has ground-truth labels (labels.json, indexed by id like a selector file).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.recipes import load_rows, resolve, source_digest
from seal_ray.stages.common import WORLD_FILE
from seal_ray.world import GENERATOR_VERSION, make_world

LABELS_FILE = "labels.json"

# world.json key -> data.<slot> of the config.
RECIPE_KEYS = {"ft": "ft", "safe_pool": "safe", "hh": "hh", "orca": "orca", "hexphi": "hexphi"}


def data_seed(config: CellConfig) -> int:
    return config.seed if config.world.data_seed is None else config.world.data_seed


def recipe_slots(config: CellConfig) -> dict[str, str]:
    """world.json key -> config slot of what a recipes cell reads: ft, the safe pool, the listed test sets."""
    return {name: slot for name, slot in RECIPE_KEYS.items()
            if slot in ("ft", "safe") or slot in config.evaluation.test_sets}


def key(config: CellConfig) -> dict:
    if config.data.source == "recipes":
        # Real data does not depend on the cell's seed; a local file's content digest is in the key.
        sources = {}
        for name, slot in recipe_slots(config).items():
            spec = getattr(config.data, slot)
            sources[name] = {**dataclasses.asdict(spec), "recipe": resolve(spec.recipe, slot),
                             "digest": source_digest(spec.path, spec.revision)}
        return {"source": "recipes", "sources": sources}
    world = dataclasses.asdict(config.world)
    world.pop("data_seed")
    return {"world": world, "data_seed": data_seed(config), "source": config.data.source, "generator": GENERATOR_VERSION}


def run(config: CellConfig, work_dir: Path) -> dict:
    if config.data.source == "recipes":
        world = {name: load_rows(getattr(config.data, slot), slot, f"data.{slot}")
                 for name, slot in recipe_slots(config).items()}
        (work_dir / WORLD_FILE).write_text(json.dumps(world))
        return {"sizes": {name: len(rows) for name, rows in world.items()}}
    world = make_world(config.world, data_seed(config))
    (work_dir / WORLD_FILE).write_text(json.dumps(world))
    # Ground-truth labels indexed by id, like the selector file (only metrics and plots read them).
    (work_dir / LABELS_FILE).write_text(json.dumps([row["label"] for row in world["ft"]]))
    return {"sizes": {name: len(rows) for name, rows in world.items()}}
