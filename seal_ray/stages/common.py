"""What several stages read: the world file, encoded rows, the model of an upstream stage."""

from __future__ import annotations

import json
from pathlib import Path

from seal_ray.batching import Encoded, encode_rows
from seal_ray.config import CellConfig, cell_from_dict

WORLD_FILE = "world.json"
MODEL_DIR = "model"


def load_world(data_dir: str | Path) -> dict[str, list[dict]]:
    return json.loads((Path(data_dir) / WORLD_FILE).read_text())


def config_of(spec: dict) -> CellConfig:
    return cell_from_dict(spec["config"])


def encode(rows: list[dict], tokenizer, config: CellConfig) -> dict[int, Encoded]:
    return encode_rows(rows, tokenizer, config.data.template, config.data.max_len)


def safe_set_size(config: CellConfig, pool_size: int) -> int:
    """The upper-level set's size: a fraction of |D_ft| or of the available safe pool (data.safe_fraction_unit)."""
    whole = config.world.n_ft if config.data.safe_fraction_unit == "ft_size" else pool_size
    return max(1, min(pool_size, round(config.data.safe_fraction * whole)))


def read_ids(path: str | Path) -> list[int]:
    return json.loads(Path(path).read_text())
