"""Stage `generate`: answers of a model to every prompt of the test sets, batched and sharded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.generation import generate_answers, refusal_margins
from seal_ray.models import load_model
from seal_ray.stages.common import MODEL_DIR, config_of, load_world

GENERATIONS_FILE = "generations.json"
MARGINS_FILE = "refusal_margins.json"  # per hexphi prompt: log p(refusal) - log p(compliance), where the world knows both


def test_sets_of(config: CellConfig, world: dict) -> list[str]:
    """The configured test sets, plus the mini world's look-alike set (the over-refusal rate) when it has one."""
    return sorted(config.evaluation.test_sets) + (["xstest"] if "xstest" in world else [])


def key(config: CellConfig, model_hash: str, data_hash: str) -> dict:
    return {
        "model": model_hash, "data": data_hash, "seed": config.seed, "generation": dataclasses.asdict(config.generation),
        "test_sets": sorted(config.evaluation.test_sets), "template": config.data.template,
    }


def worker(spec: dict, dist, checkpointer, log) -> dict:
    config = config_of(spec)
    model, tokenizer = load_model(Path(spec["model_dir"]) / MODEL_DIR, config.model, dist.device, merge=True)
    world = load_world(spec["data_dir"])
    generations = {}
    tokens = 0
    for name in test_sets_of(config, world):
        prompts = [row["prompt"] for row in world[name]]
        answers = generate_answers(model, tokenizer, prompts, config.data.template, config.generation, dist, config.seed)
        generations[name] = [{"id": row["id"], "prompt": row["prompt"], "answer": a} for row, a in zip(world[name], answers)]
        tokens += sum(len(tokenizer.encode(a)) for a in answers[dist.rank :: dist.world_size])
        log(f"[generate] {name}: {len(answers)} answers")
    if dist.is_main:
        (Path(spec["work_dir"]) / GENERATIONS_FILE).write_text(json.dumps(generations))
        scored = [row for row in world.get("hexphi", []) if row.get("refusal") and row.get("compliance")]
        if scored and "hexphi" in config.evaluation.test_sets:
            margins = refusal_margins(model, tokenizer, scored, config.data.template, dist.device, config.generation.batch_size)
            (Path(spec["work_dir"]) / MARGINS_FILE).write_text(json.dumps(dict(zip((r["id"] for r in scored), margins))))
    dist.barrier()
    return {"tokens": tokens}
