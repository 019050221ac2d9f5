"""What several stages read: the world file, encoded rows, the model of an upstream stage."""

from __future__ import annotations

import json
from pathlib import Path

from seal_ray.batching import Encoded, encode_rows
from seal_ray.config import CellConfig, cell_from_dict

WORLD_FILE = "world.json"
MODEL_DIR = "model"
KEPT_FILE = "kept_ids.json"  # the select stage's kept D_ft ids
EXTRA_FILE = "extra_rows.json"  # rows the select stage adds to the kept ones (SafeInstr's safety demonstrations)


def load_world(data_dir: str | Path) -> dict[str, list[dict]]:
    return json.loads((Path(data_dir) / WORLD_FILE).read_text())


def config_of(spec: dict) -> CellConfig:
    return cell_from_dict(spec["config"])


def encode(rows: list[dict], tokenizer, config: CellConfig) -> dict[int, Encoded]:
    # A row with nothing to prompt or to learn (a real dataset's empty turn) is dropped like an over-long one:
    # its id stays, unused, so the ids of the others never shift.
    usable = [row for row in rows if row["prompt"] and row["response"]]
    return encode_rows(usable, tokenizer, config.data.template, config.data.max_len)


def safe_set_size(config: CellConfig, pool_size: int, ft_size: int | None = None) -> int:
    """The upper-level set's size: a fraction of |D_ft| or of the available safe pool (data.safe_fraction_unit).

    `ft_size` is |D_ft| (needed for data.source 'recipes'; the mini world's is world.n_ft)."""
    if config.data.safe_fraction_unit == "ft_size":
        whole = config.world.n_ft if ft_size is None else ft_size
    else:
        whole = pool_size
    return max(1, min(pool_size, round(config.data.safe_fraction * whole)))


def read_ids(path: str | Path) -> list[int]:
    return json.loads(Path(path).read_text())


def training_rows(spec: dict, tokenizer, config: CellConfig) -> tuple[dict[int, Encoded], list[int]]:
    """(encoded rows, ids to train on): the kept D_ft ids plus the select stage's extra rows, minus unusable ones."""
    select_dir = Path(spec["select_dir"])
    extra_path = select_dir / EXTRA_FILE
    extra = json.loads(extra_path.read_text()) if extra_path.exists() else []
    encoded = encode(load_world(spec["data_dir"])["ft"] + extra, tokenizer, config)
    wanted = read_ids(select_dir / KEPT_FILE) + [row["id"] for row in extra]
    return encoded, [i for i in wanted if i in encoded]
