"""Stage `selector`: train SEAL's selector omega from the base model (Algorithm 1 or 2, SEAL.md).

theta starts from the base model; Algorithm 1 adds theta_hat, a second trainable copy with its own
optimiser (with LoRA: theta is an adapter on the frozen base, theta_hat a second adapter on the same base). The upper-level set is the first `safe_set_size` rows of the safe pool.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.curves import CURVES_FILE, CurveRecorder
from seal_ray.lora import add_aux_adapter, add_lora
from seal_ray.models import load_model
from seal_ray.schedules import PenaltySchedule
from seal_ray.selector import expand_logits, init_logits, save_selector
from seal_ray.stages.common import MODEL_DIR, config_of, encode, load_world, safe_set_size
from seal_ray.stages.data import LABELS_FILE
from seal_ray.train_loop import SelectorSetup, train_selector

SELECTOR_FILE = "selector.pt"


def key(config: CellConfig, data_hash: str, base_hash: str) -> dict:
    key = {
        "data": data_hash, "base": base_hash, "seed": config.seed,
        "safe_fraction": config.data.safe_fraction, "safe_fraction_unit": config.data.safe_fraction_unit,
        "selector": _selector_key(config), "penalty": dataclasses.asdict(config.penalty),
        "template": config.data.template, "max_len": config.data.max_len,
    }
    if config.model.lora.enabled:  # only then: full fine-tuning cells keep the keys they were cached under
        key["lora"] = dataclasses.asdict(config.model.lora)
    return key


def _selector_key(config: CellConfig) -> dict:
    selector = dataclasses.asdict(config.selector)
    if selector["epoch"] == "cycle_safe":  # the default keeps the key selectors were cached under before the field
        selector.pop("epoch")
    return selector


def worker(spec: dict, dist, checkpointer, log) -> dict:
    config = config_of(spec)
    model, tokenizer = load_model(Path(spec["base_dir"]) / MODEL_DIR, config.model, dist.device)
    aux_model = None
    if config.model.lora.enabled:
        # theta is a LoRA adapter on the frozen base; Algorithm 1's theta_hat a second adapter on the same base.
        model = add_lora(model, config.model.lora)
        if config.selector.algorithm == 1:
            aux_model = add_aux_adapter(model)
    elif config.selector.algorithm == 1:
        aux_model = copy.deepcopy(model)  # full fine-tuning: theta_hat is a second full copy
    world = load_world(spec["data_dir"])
    ft_rows, pool = world["ft"], world["safe_pool"]
    safe_rows = pool[: safe_set_size(config, len(pool), len(ft_rows))]
    encoded_ft = encode(ft_rows, tokenizer, config)
    encoded_safe = encode(safe_rows, tokenizer, config)
    # omega has one logit per row that can be trained on (SEAL.md: dropped rows have no entry), so an
    # over-long or empty row is outside the softmax normaliser; position k is the k-th trainable id.
    trainable_ids = sorted(encoded_ft)
    by_position = {k: dataclasses.replace(encoded_ft[i], id=k) for k, i in enumerate(trainable_ids)}
    setup = SelectorSetup(
        activation=config.selector.activation, algorithm=config.selector.algorithm, lr=config.selector.lr,
        betas=tuple(config.selector.betas), epochs=config.selector.epochs, model_lr=config.selector.model_lr,
        aux_lr=config.selector.aux_lr, batch_size=config.selector.batch_size,
        schedule=PenaltySchedule.from_config(config.penalty), model_betas=tuple(config.selector.model_betas),
        model_max_grad_norm=config.selector.model_max_grad_norm, max_grad_norm=config.selector.max_grad_norm,
        epoch_rule=config.selector.epoch,
    )
    labels_path = Path(spec["data_dir"]) / LABELS_FILE  # only the mini world has them: p(omega)'s share per label
    labels_by_id = json.loads(labels_path.read_text()) if labels_path.is_file() else None
    labels = [labels_by_id[i] for i in trainable_ids] if labels_by_id else None  # by position, like omega
    recorder = CurveRecorder("selector", every=config.resources.curve_every, labels=labels, activation=setup.activation)
    logits, stats = train_selector(
        model, aux_model, init_logits(len(trainable_ids), config.selector.activation, config.selector.init),
        by_position, encoded_safe, setup=setup, seed=config.seed, pad_id=tokenizer.pad_token_id, dist=dist,
        checkpointer=checkpointer, micro_batch=config.resources.micro_batch_size, pack=config.resources.pack_batches,
        log=log, recorder=recorder,
    )
    # Every worker's omega replica, to check that they stay bit-identical (SEAL.md, "Distributed training").
    omega_sha256 = dist.all_gather_objects(hashlib.sha256(logits.contiguous().numpy().tobytes()).hexdigest())
    work_dir = Path(spec["work_dir"])
    if dist.is_main:
        # The file has one entry per stable id; rows with no logit hold NO_LOGIT (-inf: weight 0).
        save_selector(expand_logits(logits, trainable_ids, len(ft_rows)), work_dir / SELECTOR_FILE)
        (work_dir / "eligible_ids.json").write_text(json.dumps(trainable_ids))
        recorder.write(work_dir / CURVES_FILE)
    dist.barrier()
    return {"tokens": stats.tokens, "safe_rows": len(encoded_safe), "no_logit_rows": len(ft_rows) - len(trainable_ids), "epoch_losses": stats.epoch_losses,
            "resumed_from_epoch": stats.resumed_from_epoch, "omega_sha256": omega_sha256}
