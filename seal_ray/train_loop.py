"""The training loops: plain SFT (base model, fine-tuning) and SEAL selector training.

Written once against `Dist` (distributed.py): the single-process run is the 1-worker case of the same
code that runs in each Ray Train worker. Each loop checkpoints after every epoch through a
`Checkpointer` and starts from the latest checkpoint it finds, so a restarted worker group resumes.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from seal_ray.algorithms import seal_objectives, sft_objective
from seal_ray.batching import (
    CyclingIds, Encoded, collate, collate_packed, global_batches, local_share, micro_batches, selector_steps,
)
from seal_ray.checkpoints import Checkpointer
from seal_ray.curves import SEAL_TERMS, CurveRecorder, seal_terms
from seal_ray.distributed import LocalDist, all_reduce_gradients
from seal_ray.errors import StageFailed
from seal_ray.faults import maybe_inject_fault
from seal_ray.lora import load_trained_state, trained_state
from seal_ray.losses import per_sample_loss
from seal_ray.measure import record_loop
from seal_ray.schedules import PenaltySchedule
from seal_ray.selector import selector_weights

Log = Callable[[str], None]


@dataclass
class LoopStats:
    samples: int = 0
    tokens: int = 0  # non-padding tokens trained on
    computed_tokens: int = 0  # tokens the model computed, padding included
    resumed_from_epoch: int | None = None
    epoch_losses: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def finish(self) -> None:
        """The loop is done: its wall time and computed tokens go to the stage's measurements."""
        record_loop(time.perf_counter() - self.started, self.computed_tokens)


class Batcher:
    """Ids -> a batch on the device, packed (several samples per row: little padding) when `pack` is on
    and the model gives every sample the same loss packed as padded, which is checked once on a few samples."""

    def __init__(self, models: list[torch.nn.Module], encoded: dict[int, Encoded], pad_id: int, device: torch.device,
                 pack: bool = True):
        self.pad_id, self.device = pad_id, device
        probe = [encoded[i] for i in sorted(encoded)[:4]]
        self.packed = pack and len(probe) > 1 and all(_packing_preserves_losses(m, probe, pad_id, device) for m in models)

    def __call__(self, encoded: dict[int, Encoded], ids: list[int], stats: LoopStats) -> dict[str, torch.Tensor]:
        samples = [encoded[i] for i in ids]
        batch = (collate_packed if self.packed else collate)(samples, self.pad_id)
        stats.samples += len(samples)
        stats.tokens += sum(s.length for s in samples)
        stats.computed_tokens += batch["input_ids"].numel()
        return _to(batch, self.device)


def _packing_preserves_losses(model, samples: list[Encoded], pad_id: int, device) -> bool:
    # A model that ignores position_ids (or builds its own mask from them differently) would let packed
    # samples see each other: such a model trains on padded batches.
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            padded = per_sample_loss(model, _to(collate(samples, pad_id), device))
            one_row = collate_packed(samples, pad_id, width=sum(s.length for s in samples))  # all of them in one row
            packed = per_sample_loss(model, _to(one_row, device))
    except (TypeError, ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)
    return bool(torch.allclose(padded, packed, rtol=1e-4, atol=1e-5))


def micro_batch_size(global_batch: int, world_size: int, configured: int | None) -> int:
    local = math.ceil(global_batch / world_size)
    return min(local, configured) if configured else local


def _ensure_grads(parameters: list[torch.nn.Parameter]) -> None:
    # Every worker must all-reduce the same tensors, also one whose share of a short last batch is empty.
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _check_finite(value: torch.Tensor, what: str, epoch: int, step: int) -> None:
    if not torch.isfinite(value).all():
        raise StageFailed(f"{what} became {value.detach().flatten()[0].item()} at epoch {epoch + 1}, step {step + 1}")


def _clip(params: list[torch.nn.Parameter], max_norm: float | None) -> None:
    # After the all-reduce: every worker clips the same averaged gradient, so replicas stay identical.
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The share of the base learning rate in force at optimiser step `step` (0-based) of `total_steps`."""
    if schedule == "constant" or total_steps <= 0:
        return 1.0
    progress = min(step / total_steps, 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def train_sft(
    model: torch.nn.Module,
    encoded: dict[int, Encoded],
    train_ids: list[int],
    *,
    stage: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    pad_id: int,
    dist: LocalDist,
    checkpointer: Checkpointer,
    micro_batch: int | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    max_grad_norm: float | None = None,
    lr_schedule: str = "constant",
    pack: bool = False,
    log: Log = print,
    recorder: CurveRecorder | None = None,
) -> LoopStats:
    """Ordinary SFT on `train_ids`: AdamW, mean per-sample loss over each global batch, optional clipping
    and a learning rate decayed over the run (`lr_factor`, from the global step, so a resume continues it)."""
    recorder = recorder or CurveRecorder(stage)
    recorder.start(["loss"], epochs, math.ceil(len(train_ids) / batch_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train_ids) / batch_size)
    stats = LoopStats()
    start_epoch = 0
    resumed = checkpointer.latest()
    if resumed is not None:
        start_epoch, state = resumed
        load_trained_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        recorder.restore(state.get("curves"), start_epoch)
        stats.resumed_from_epoch = start_epoch
        log(f"[{stage}] resuming from the checkpoint after epoch {start_epoch}")
    micro = micro_batch_size(batch_size, dist.world_size, micro_batch)
    to_batch = Batcher([model], encoded, pad_id, dist.device, pack=pack)
    model.train()
    _ensure_grads(params)
    for epoch in range(start_epoch, epochs):
        total, count = 0.0, 0
        for step, batch_ids in enumerate(global_batches(train_ids, batch_size, seed, epoch)):
            maybe_inject_fault(stage, epoch, step)
            recorder.begin_step(epoch, step)
            optimizer.zero_grad(set_to_none=False)
            for ids in micro_batches(local_share(batch_ids, dist.rank, dist.world_size), micro):
                losses = per_sample_loss(model, to_batch(encoded, ids, stats))
                objective = sft_objective(losses, len(batch_ids))
                _check_finite(objective, f"[{stage}] the loss", epoch, step)
                objective.backward()
                recorder.add(loss=losses)
                total += float(losses.detach().sum())
                count += len(ids)
            all_reduce_gradients(params, dist)
            _clip(params, max_grad_norm)
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(lr_schedule, epoch * steps_per_epoch + step, epochs * steps_per_epoch)
            optimizer.step()
            recorder.end_step(epoch, step, dist, lambda: {"lr": optimizer.param_groups[0]["lr"]})
        mean_loss = _global_mean(total, count, dist)
        stats.epoch_losses.append(mean_loss)
        recorder.end_epoch(epoch, {"epoch_loss": mean_loss, "lr": optimizer.param_groups[0]["lr"]})
        log(f"[{stage}] epoch {epoch + 1}/{epochs} loss {mean_loss:.4f}")
        checkpointer.save(epoch + 1, {"model": trained_state(model), "optimizer": optimizer.state_dict(),
                                      "rng": torch.get_rng_state(), "curves": recorder.state()})
    stats.finish()
    return stats


def _global_mean(total: float, count: int, dist: LocalDist) -> float:
    summed = dist.all_reduce_sum_(torch.tensor([total, float(count)], dtype=torch.float64, device=dist.device))
    return float(summed[0] / max(summed[1], 1.0))


@dataclass
class SelectorSetup:
    activation: str
    algorithm: int
    lr: float
    betas: tuple[float, float]
    epochs: int
    model_lr: float
    aux_lr: float
    batch_size: int
    schedule: PenaltySchedule
    model_betas: tuple[float, float] = (0.9, 0.999)
    model_max_grad_norm: float | None = None
    max_grad_norm: float | None = None
    epoch_rule: str = "cycle_safe"  # selector.epoch: cycle_safe | zip_shortest (batching.selector_steps)


def train_selector(
    model: torch.nn.Module,
    aux_model: torch.nn.Module | None,
    logits: torch.Tensor,
    encoded_ft: dict[int, Encoded],
    encoded_safe: dict[int, Encoded],
    *,
    setup: SelectorSetup,
    seed: int,
    pad_id: int,
    dist: LocalDist,
    checkpointer: Checkpointer,
    micro_batch: int | None = None,
    pack: bool = False,
    log: Log = print,
    recorder: CurveRecorder | None = None,
) -> tuple[torch.Tensor, LoopStats]:
    """SEAL's selector training (Algorithm 2, or Algorithm 1 when `aux_model` is given).

    `logits` is omega indexed by stable id (every D_ft row); it is replicated on each worker: local
    selector gradients are summed over workers and every replica takes the same Adam step.
    """
    if (aux_model is not None) != (setup.algorithm == 1):
        raise ValueError("Algorithm 1 needs an auxiliary model, Algorithm 2 must not have one")
    omega = torch.nn.Parameter(logits.clone().to(dist.device))
    aux_params: list[torch.nn.Parameter] = []
    if aux_model is not None:
        # A LoRA theta_hat (lora.AdapterView) shares theta's model: its weights are listed by the view.
        aux_params = (aux_model.trainable_parameters() if hasattr(aux_model, "trainable_parameters")
                      else [p for p in aux_model.parameters() if p.requires_grad])
    aux_ids = {id(p) for p in aux_params}
    theta_params = [p for p in model.parameters() if p.requires_grad and id(p) not in aux_ids]
    theta_opt = torch.optim.AdamW(theta_params, lr=setup.model_lr, betas=tuple(setup.model_betas), weight_decay=0.0)
    omega_opt = torch.optim.Adam([omega], lr=setup.lr, betas=setup.betas, weight_decay=0.0)
    # theta_hat is a second copy of theta (SEAL.md, Algorithm 1): theta's optimiser, at its own rate beta.
    aux_opt = (torch.optim.AdamW(aux_params, lr=setup.aux_lr, betas=tuple(setup.model_betas), weight_decay=0.0)
               if aux_model is not None else None)
    ft_ids = sorted(encoded_ft)
    safe_batches = CyclingIds(sorted(encoded_safe), setup.batch_size, seed)
    stats = LoopStats()
    recorder = recorder or CurveRecorder("selector", activation=setup.activation)
    recorder.start([*SEAL_TERMS, *(["aux_loss"] if aux_model is not None else [])], setup.epochs,
                   math.ceil(len(ft_ids) / setup.batch_size))

    start_epoch = 0
    resumed = checkpointer.latest()
    if resumed is not None:
        start_epoch, state = resumed
        load_trained_state(model, state["model"])
        theta_opt.load_state_dict(state["theta_opt"])
        with torch.no_grad():
            omega.copy_(state["omega"])
        omega_opt.load_state_dict(state["omega_opt"])
        if aux_model is not None:
            aux_model.load_state_dict(state["aux_model"])
            aux_opt.load_state_dict(state["aux_opt"])
        safe_batches.position = int(state["safe_position"])
        torch.set_rng_state(state["rng"])
        recorder.restore(state.get("curves"), start_epoch)
        stats.resumed_from_epoch = start_epoch
        log(f"[selector] resuming from the checkpoint after epoch {start_epoch}")

    micro = micro_batch_size(setup.batch_size, dist.world_size, micro_batch)
    all_params = theta_params + aux_params + [omega]
    to_batch = Batcher([model] + ([aux_model] if aux_model is not None else []), encoded_ft, pad_id, dist.device,
                       pack=pack)
    model.train()
    if aux_model is not None:
        aux_model.train()
    _ensure_grads(all_params)
    for epoch in range(start_epoch, setup.epochs):
        upper_weight = setup.schedule.upper_weight(epoch)
        total, count = 0.0, 0
        for step, (ft_batch, safe_batch) in enumerate(
                selector_steps(ft_ids, safe_batches, setup.batch_size, seed, epoch, setup.epoch_rule)):
            maybe_inject_fault("selector", epoch, step)
            recorder.begin_step(epoch, step)
            for opt in (theta_opt, omega_opt, aux_opt):
                if opt is not None:
                    opt.zero_grad(set_to_none=False)
            local_ft = local_share(ft_batch, dist.rank, dist.world_size)
            local_safe = local_share(safe_batch, dist.rank, dist.world_size)
            n_micro = max(math.ceil(len(local_ft) / micro), math.ceil(len(local_safe) / micro), 1)
            for m in range(n_micro):
                ft_ids_m = local_ft[m * micro : (m + 1) * micro]
                safe_ids_m = local_safe[m * micro : (m + 1) * micro]
                if not ft_ids_m and not safe_ids_m:
                    continue
                ft_losses, weights, aux_losses = _ft_terms(model, aux_model, omega, setup.activation, encoded_ft, ft_ids_m,
                                                           to_batch, stats, dist)
                safe_losses = (per_sample_loss(model, to_batch(encoded_safe, safe_ids_m, stats)) if safe_ids_m
                               else torch.zeros(0, device=dist.device))
                objectives = seal_objectives(
                    ft_losses=ft_losses, ft_weights=weights, safe_losses=safe_losses,
                    upper_weight=upper_weight, ft_denom=len(ft_batch), safe_denom=max(len(safe_batch), 1),
                    aux_losses=aux_losses,
                )
                _check_finite(objectives.total(), "[selector] the loss", epoch, step)
                _backward(objectives, aux_model)
                if recorder.recording:
                    recorder.add(**seal_terms(ft_losses, weights, safe_losses, aux_losses))
                total += float(ft_losses.detach().sum())
                count += len(ft_ids_m)
            all_reduce_gradients(all_params, dist)
            _clip(theta_params, setup.model_max_grad_norm)
            _clip(aux_params, setup.model_max_grad_norm)
            _clip([omega], setup.max_grad_norm)
            theta_opt.step()
            omega_opt.step()
            if aux_opt is not None:
                aux_opt.step()
            recorder.end_step(epoch, step, dist, lambda: _selector_scalars(setup, epoch, theta_opt, omega_opt, aux_opt),
                              logits=omega)
        _check_finite(omega.detach(), "[selector] a selector logit", epoch, 0)
        mean_loss = _global_mean(total, count, dist)
        stats.epoch_losses.append(mean_loss)
        recorder.end_epoch(epoch, {"epoch_loss": mean_loss, **_selector_scalars(setup, epoch, theta_opt, omega_opt, aux_opt)},
                           logits=omega)
        log(
            f"[selector] epoch {epoch + 1}/{setup.epochs} gamma {setup.schedule.gamma_at(epoch):.3f} "
            f"ft loss {mean_loss:.4f} logits mean {float(omega.detach().mean()):.4f} std {float(omega.detach().std()):.4f}"
        )
        state = {
            "model": trained_state(model), "theta_opt": theta_opt.state_dict(),
            "omega": omega.detach().clone(), "omega_opt": omega_opt.state_dict(),
            "safe_position": safe_batches.position, "rng": torch.get_rng_state(), "curves": recorder.state(),
        }
        if aux_model is not None:
            state.update(aux_model=aux_model.state_dict(), aux_opt=aux_opt.state_dict())
        checkpointer.save(epoch + 1, state)
    stats.finish()
    return omega.detach().cpu(), stats


def _selector_scalars(setup: SelectorSetup, epoch: int, theta_opt, omega_opt, aux_opt) -> dict[str, float]:
    scalars = {"upper_weight": setup.schedule.upper_weight(epoch), "gamma": setup.schedule.gamma_at(epoch),
               "lr_theta": theta_opt.param_groups[0]["lr"], "lr_omega": omega_opt.param_groups[0]["lr"]}
    if aux_opt is not None:
        scalars["lr_aux"] = aux_opt.param_groups[0]["lr"]
    return scalars


def _backward(objectives, aux_model) -> None:
    """Gradients of every objective; theta_hat's runs with its adapter active (lora.AdapterView.active).

    The objectives touch disjoint parameters (algorithms.py), so two backwards give the gradients of
    one backward of their sum, bit for bit."""
    if objectives.aux is None:
        objectives.total().backward()
        return
    with getattr(aux_model, "active", contextlib.nullcontext)():
        objectives.aux.backward()
    (objectives.theta + objectives.selector).backward()


def _ft_terms(model, aux_model, omega, activation, encoded_ft, ids, to_batch: Batcher, stats: LoopStats, dist):
    if not ids:
        empty = torch.zeros(0, device=dist.device)
        # Keep omega in the graph so every worker's backward gives it a (zero) gradient.
        return empty, selector_weights(omega, activation)[:0], (empty if aux_model is not None else None)
    batch = to_batch(encoded_ft, ids, stats)
    ft_losses = per_sample_loss(model, batch)
    # Weights over all N logits (softmax normalises over every sample), then the batch's ids.
    weights = selector_weights(omega, activation)[batch["ids"]]
    aux_losses = per_sample_loss(aux_model, batch) if aux_model is not None else None
    return ft_losses, weights, aux_losses
