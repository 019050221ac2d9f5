"""Stage `select`: which D_ft ids the fine-tuning keeps (sft, seal, random, oracle, file)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch

from seal_ray.config import CellConfig
from seal_ray.errors import UserError
from seal_ray.selector import keep_count, length_warning, load_selector, top_p_ids
from seal_ray.stages.common import load_world
from seal_ray.stages.selector import SELECTOR_FILE

KEPT_FILE = "kept_ids.json"


def file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as err:
        raise UserError(f"selector file {path}: {err.strerror}") from None


def key(config: CellConfig, data_hash: str, selector_hash: str | None) -> dict:
    method = config.selection.method
    spec: dict = {"method": method, "data": data_hash}
    if method != "sft":
        spec["topp"] = config.selection.topp
    if method == "seal":
        spec["selector"] = selector_hash
    elif method == "random":
        spec["seed"] = config.seed
    elif method == "file":
        spec["file"] = file_digest(config.selection.selector_file)
    return spec


def choose(config: CellConfig, ft_rows: list[dict], selector_dir: Path | None, log) -> tuple[list[int], torch.Tensor | None]:
    """(kept ids, logits used or None)."""
    ids = [row["id"] for row in ft_rows]
    method, topp = config.selection.method, config.selection.topp
    if method == "sft":
        return sorted(ids), None
    if method == "oracle":
        # The clean-data reference point: only possible because the mini world knows every label.
        return sorted(row["id"] for row in ft_rows if row.get("label", "clean") == "clean"), None
    if method == "random":
        rng = random.Random(config.seed * 1_000_003 + 17)
        return sorted(rng.sample(ids, keep_count(len(ids), topp))), None
    if method == "seal":
        logits = load_selector(selector_dir / SELECTOR_FILE)
        eligible = json.loads((selector_dir / "eligible_ids.json").read_text())
        return top_p_ids(logits[eligible], eligible, topp), logits
    logits = load_selector(config.selection.selector_file)
    warning = length_warning(logits.numel(), len(ids))
    if warning:
        log(f"[select] warning: {warning}")
    usable = [i for i in ids if i < logits.numel()]
    return top_p_ids(logits[usable], usable, topp), logits


def run(config: CellConfig, data_dir: Path, selector_dir: Path | None, work_dir: Path, log) -> dict:
    ft_rows = load_world(data_dir)["ft"]
    kept, _ = choose(config, ft_rows, selector_dir, log)
    (work_dir / KEPT_FILE).write_text(json.dumps(kept))
    return {"kept": len(kept), "of": len(ft_rows)}
