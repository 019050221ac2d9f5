"""Stage `data`: the mini world's datasets, drawn from the data seed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.stages.common import WORLD_FILE
from seal_ray.world import make_world

LABELS_FILE = "labels.json"


def data_seed(config: CellConfig) -> int:
    return config.seed if config.world.data_seed is None else config.world.data_seed


def key(config: CellConfig) -> dict:
    world = dataclasses.asdict(config.world)
    world.pop("data_seed")
    return {"world": world, "data_seed": data_seed(config), "source": config.data.source}


def run(config: CellConfig, work_dir: Path) -> dict:
    world = make_world(config.world, data_seed(config))
    (work_dir / WORLD_FILE).write_text(json.dumps(world))
    # Ground-truth labels indexed by id, like the selector file (only metrics and plots read them).
    (work_dir / LABELS_FILE).write_text(json.dumps([row["label"] for row in world["ft"]]))
    return {"sizes": {name: len(rows) for name, rows in world.items()}}
