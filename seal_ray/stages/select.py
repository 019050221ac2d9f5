"""Stage `select`: which D_ft ids the fine-tuning keeps, and what it adds to them.

Methods: sft (all), seal (the trained selector's top share), random, oracle (the mini world's clean rows),
file (an official selector file), and the paper's baselines (SEAL.md table; seal_ray/baselines.py):
dsir (hashed n-gram importance weights towards the safe set), safeinstr (all of D_ft plus safety
demonstrations), seal_safeinstr (SEAL's selection plus the same safety demonstrations).
Writes kept_ids.json and, for the SafeInstr methods, extra_rows.json (rows with fresh ids).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch

from seal_ray.baselines import dsir_keep, safety_count, safety_rows
from seal_ray.config import CellConfig, RecipeSource
from seal_ray.errors import UserError
from seal_ray.recipes import load_rows, source_digest
from seal_ray.official_selector import cell_logit_ids
from seal_ray.selector import expand_logits, keep_count, load_selector, top_p_ids, top_p_of_file
from seal_ray.stages.common import EXTRA_FILE, KEPT_FILE, load_world, safe_set_size
from seal_ray.stages.selector import SELECTOR_FILE

SELECTOR_METHODS = ("seal", "seal_safeinstr")
SAFETY_METHODS = ("safeinstr", "seal_safeinstr")


def needs_selector(config: CellConfig) -> bool:
    """Whether the cell trains SEAL's selector before selecting."""
    return config.selection.method in SELECTOR_METHODS


def mixes_safety(config: CellConfig) -> bool:
    return config.selection.method in SAFETY_METHODS


def file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as err:
        raise UserError(f"selector file {path}: {err.strerror}") from None


def _safety_source(config: CellConfig) -> RecipeSource:
    return RecipeSource(recipe="prompt_response", path=config.selection.safety_file, fields=config.selection.safety_fields)


def key(config: CellConfig, data_hash: str, selector_hash: str | None) -> dict:
    selection = config.selection
    method = selection.method
    spec: dict = {"method": method, "data": data_hash}
    if method != "sft":
        spec["topp"] = selection.topp
    if needs_selector(config):
        spec["selector"] = selector_hash
    elif method == "random":
        spec["seed"] = config.seed
    elif method == "file":
        spec["file"] = file_digest(selection.selector_file)
        # What the rebuilt filter of a reference-code file depends on (official_selector.cell_logit_ids).
        spec["mapping"] = {"tokenizer": config.model.name_or_path, "max_len": config.data.max_len,
                           "template": config.data.template}
    elif method == "dsir":
        spec["dsir"] = {"ngrams": selection.dsir_ngrams, "buckets": selection.dsir_buckets,
                        "safe_fraction": config.data.safe_fraction, "safe_fraction_unit": config.data.safe_fraction_unit}
    if method == "safeinstr":
        spec.pop("topp")  # SafeInstr keeps all of D_ft
    if mixes_safety(config):
        digest = source_digest(selection.safety_file) if selection.safety_file else "mini-world"  # in the data hash
        spec["safety"] = {"digest": digest, "fields": selection.safety_fields,
                          "fraction": selection.safety_fraction}
    return spec


def choose(config: CellConfig, world: dict[str, list[dict]], selector_dir: Path | None, work_dir: Path,
           log) -> tuple[list[int], torch.Tensor | None]:
    """(kept D_ft ids, logits used or None)."""
    ft_rows = world["ft"]
    ids = [row["id"] for row in ft_rows]
    method, topp = config.selection.method, config.selection.topp
    # One budget for every selecting method: k = floor(topp * |D_ft|) rows, so that methods differ in which
    # rows they keep, never in how many (SafeInstr and sft keep all of D_ft by definition).
    budget = keep_count(len(ids), topp)
    if method in ("sft", "safeinstr"):
        return sorted(ids), None
    if method == "oracle":
        # The clean-data reference point: only possible because the mini world knows every label. Held to the
        # budget (a fixed, seed-independent draw when there are more clean rows than k).
        clean = sorted(row["id"] for row in ft_rows if row.get("label", "clean") == "clean")
        return (sorted(random.Random(17).sample(clean, budget)) if len(clean) > budget else clean), None
    if method == "random":
        rng = random.Random(config.seed * 1_000_003 + 17)
        return sorted(rng.sample(ids, budget)), None
    if method == "dsir":
        # The target is the upper-level safe set SEAL itself sees, so the two compare on equal information.
        pool = world["safe_pool"]
        target = pool[: safe_set_size(config, len(pool), len(ft_rows))]
        kept, _ = dsir_keep(ft_rows, target, topp, work_dir, ngrams=config.selection.dsir_ngrams,
                            num_buckets=config.selection.dsir_buckets)
        return kept, None
    if needs_selector(config):
        logits = load_selector(selector_dir / SELECTOR_FILE)
        eligible = json.loads((selector_dir / "eligible_ids.json").read_text())
        return top_p_ids(logits[eligible], eligible, topp, count=min(budget, len(eligible))), logits
    # A reference-code file has no logit for the rows its filter dropped: its positions go through the
    # rebuilt filter to row ids (official_selector.py), never read as ids (the index shift of SEAL.md).
    logits = load_selector(config.selection.selector_file)
    row_ids, how = cell_logit_ids(config, logits.numel(), len(ids))
    log(f"[select] selector file {config.selection.selector_file}: {how}")
    return top_p_of_file(logits, row_ids, topp), expand_logits(logits, row_ids, len(ids))


def extra_rows(config: CellConfig, ft_rows: list[dict], kept: list[int], log, world_safety: list[dict] = ()) -> list[dict]:
    """SafeInstr's safety demonstrations for this selection (ids after D_ft's)."""
    wanted = safety_count(len(kept), config.selection.safety_fraction)
    if config.selection.safety_file:
        safety = load_rows(_safety_source(config), "safety", "selection.safety_file")
    else:  # the mini world's own demonstrations, withheld from D_ft and the test sets
        safety = world_safety
    rows = safety_rows(safety, wanted, first_id=max(row["id"] for row in ft_rows) + 1)
    if len(rows) < wanted:
        log(f"[select] warning: selection.safety_file has {len(rows)} usable rows, fewer than the {wanted} asked "
            f"for ({config.selection.safety_fraction} x {len(kept)} kept rows); using them all")
    return rows


def run(config: CellConfig, data_dir: Path, selector_dir: Path | None, work_dir: Path, log) -> dict:
    world = load_world(data_dir)
    ft_rows = world["ft"]
    kept, _ = choose(config, world, selector_dir, work_dir, log)
    (work_dir / KEPT_FILE).write_text(json.dumps(kept))
    meta = {"kept": len(kept), "of": len(ft_rows)}
    if mixes_safety(config):
        extra = extra_rows(config, ft_rows, kept, log, world.get("safety", []))
        (work_dir / EXTRA_FILE).write_text(json.dumps(extra))
        meta["extra"] = len(extra)
    return meta
