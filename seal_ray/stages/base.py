"""Stage `base`: train the mini world's aligned base model (helpful on base skills, refusing harm).

A hub model (model.name_or_path other than 'mini') is its own base: this stage then trains nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.curves import CURVES_FILE, CurveRecorder
from seal_ray.models import build_mini_model, save_model, write_model_ref
from seal_ray.stages.common import MODEL_DIR, config_of, encode, load_world
from seal_ray.tokenizer import CharTokenizer
from seal_ray.train_loop import train_sft

MAX_POSITIONS = 256


def base_seed(config: CellConfig) -> int:
    """The base model's training seed: fixed (base.seed) unless null, then the cell's."""
    return config.seed if config.base.seed is None else config.base.seed


def key(config: CellConfig, data_hash: str) -> dict:
    model = dataclasses.asdict(config.model)
    model.pop("lora")
    return {
        "data": data_hash, "model": model, "base": dataclasses.asdict(config.base), "seed": base_seed(config),
        "template": config.data.template, "max_len": config.data.max_len,
    }


def worker(spec: dict, dist, checkpointer, log) -> dict:
    config = config_of(spec)
    if config.model.name_or_path != "mini":
        # A pretrained model is its own aligned base: record where it is, copy no weights.
        if dist.is_main:
            write_model_ref(Path(spec["work_dir"]) / MODEL_DIR, config.model.name_or_path)
        dist.barrier()
        log(f"[base] {config.model.name_or_path} is a pretrained model: nothing to train")
        return {"tokens": 0, "final_loss": None, "resumed_from_epoch": None}
    tokenizer = CharTokenizer()
    model = build_mini_model(config.model, tokenizer, base_seed(config), MAX_POSITIONS).to(dist.device)
    rows = load_world(spec["data_dir"])["base"]
    encoded = encode(rows, tokenizer, config)
    recorder = CurveRecorder("base", every=config.resources.curve_every)
    # base.pack_batches, not resources.pack_batches: the base model is the world's one pretrained model,
    # shared by every seed of a study. Packing gives the same losses up to float order, which over the
    # base run is another draw of that model (docs/calibration.md), so it belongs to the base's key.
    stats = train_sft(
        model, encoded, sorted(encoded), stage="base", epochs=config.base.epochs, lr=config.base.lr,
        batch_size=config.base.batch_size, seed=base_seed(config), pad_id=tokenizer.pad_token_id, dist=dist,
        lr_schedule=config.base.lr_schedule,
        checkpointer=checkpointer, micro_batch=config.resources.micro_batch_size, pack=config.base.pack_batches,
        log=log, recorder=recorder,
    )
    if dist.is_main:
        save_model(model, tokenizer, Path(spec["work_dir"]) / MODEL_DIR)
        recorder.write(Path(spec["work_dir"]) / CURVES_FILE)
    dist.barrier()
    return {"tokens": stats.tokens, "final_loss": stats.epoch_losses[-1] if stats.epoch_losses else None,
            "resumed_from_epoch": stats.resumed_from_epoch}
