"""Stage `finetune`: ordinary SFT of the base model on the selected ids (all weights, or LoRA adapters)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.curves import CURVES_FILE, CurveRecorder
from seal_ray.lora import add_lora
from seal_ray.models import load_model, referenced, save_model
from seal_ray.stages.common import MODEL_DIR, config_of, training_rows
from seal_ray.train_loop import train_sft


def key(config: CellConfig, base_hash: str, select_hash: str) -> dict:
    return {
        "base": base_hash, "select": select_hash, "seed": config.seed,
        "finetune": dataclasses.asdict(config.finetune), "lora": dataclasses.asdict(config.model.lora),
        "template": config.data.template, "max_len": config.data.max_len,
    }


def worker(spec: dict, dist, checkpointer, log) -> dict:
    config = config_of(spec)
    base_dir = Path(spec["base_dir"]) / MODEL_DIR
    model, tokenizer = load_model(base_dir, config.model, dist.device)
    if config.model.lora.enabled:
        model = add_lora(model, config.model.lora)  # only the adapters train; the stage saves only them
    encoded, kept = training_rows(spec, tokenizer, config)  # the kept D_ft rows plus SafeInstr's extra rows
    recorder = CurveRecorder("finetune", every=config.resources.curve_every)
    stats = train_sft(
        model, encoded, kept, stage="finetune", epochs=config.finetune.epochs, lr=config.finetune.lr,
        batch_size=config.finetune.batch_size, seed=config.seed, pad_id=tokenizer.pad_token_id, dist=dist,
        checkpointer=checkpointer, micro_batch=config.resources.micro_batch_size, pack=config.resources.pack_batches, betas=tuple(config.finetune.betas),
        max_grad_norm=config.finetune.max_grad_norm, lr_schedule=config.finetune.lr_schedule, log=log, recorder=recorder,
    )
    if dist.is_main:
        recorder.write(Path(spec["work_dir"]) / CURVES_FILE)
        base = str(Path(referenced(base_dir)).resolve()) if Path(referenced(base_dir)).exists() else referenced(base_dir)
        save_model(model, tokenizer, Path(spec["work_dir"]) / MODEL_DIR, base=base if config.model.lora.enabled else None)
    dist.barrier()
    return {"tokens": stats.tokens, "rows": len(kept), "final_loss": stats.epoch_losses[-1] if stats.epoch_losses else None,
            "resumed_from_epoch": stats.resumed_from_epoch}
