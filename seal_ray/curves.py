"""Training curves: what every training stage (base, selector, finetune) records as it trains.

A `CurveRecorder` is handed to a training loop (train_loop.py). Every `every` optimiser steps (by
default about `TARGET_POINTS` points per stage) and at each epoch end it appends one point: the
stage, `kind` ('step' or 'epoch'), `step` (optimiser steps done), `epoch` (0-based), and the metrics.
Losses are accumulated as device tensors only on recorded steps and reduced over workers with one
all-reduce there, so a step that is not recorded costs nothing and a recorded one one collective.

Metrics (docs/results_schema.md, "Curves"):
    SFT stages      loss (mean per-sample loss of the step's global batch), lr; epoch points: epoch_loss
    selector        upper_loss f_S(theta) (safe set), ft_loss (mean l_i(theta)), lower_loss (mean
                    p_i l_i(theta)), selector_gap (mean l_i(theta) - l_i(theta_hat); Algorithm 2:
                    l_i(theta)), selector_objective (mean p_i * gap_i, what omega descends),
                    aux_loss (Algorithm 1: mean l_i(theta_hat)), upper_weight w and gamma in force,
                    lr_theta, lr_omega, lr_aux; p(omega): weight/min, weight/max, weight/mean,
                    weight/entropy (of p / sum p, nats), weight/ess_fraction ((sum p)^2 / sum p^2 / N),
                    weight/share_<label> (mini world: the share of the total weight on each hidden
                    label); epoch points in the mini world: auroc_unsafe, auroc_low_quality.

The points live in the recorder (and in each epoch checkpoint, so a resumed stage keeps its curve);
the stage writes them to `curves.jsonl` in its folder, cached with it. A sweep copies each finished
cell's curves to `<sweep>/curves/<cell>-s<seed>.jsonl` (results.load_curves reads them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from seal_ray.metrics import auroc
from seal_ray.selector import selector_weights
from seal_ray.storage import Storage

CURVES_FILE = "curves.jsonl"
TARGET_POINTS = 100
TRAINING_STAGES = ("base", "selector", "finetune")
BAD_LABELS = ("unsafe", "low_quality")  # AUROC of clean vs each (metrics.selector_quality's convention)


def interval(total_steps: int, every: int | None) -> int:
    """Steps between recorded points: `every`, or about TARGET_POINTS over the whole stage."""
    return every if every else max(1, total_steps // TARGET_POINTS)


class CurveRecorder:
    """Collects one training stage's curve points; see the module docstring for the metrics."""

    def __init__(self, stage: str, *, every: int | None = None, labels: Sequence[str] | None = None,
                 activation: str | None = None):
        self.stage, self.every = stage, every
        self.activation = activation
        self.label_names = sorted(set(labels)) if labels is not None else []
        self._labels = (torch.tensor([self.label_names.index(x) for x in labels]) if labels is not None else None)
        self.points: list[dict[str, Any]] = []
        self.names: list[str] = []
        self._interval = 1
        self._steps_per_epoch = 1
        self._recording = False
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    # --- set-up and checkpoints -------------------------------------------------------------------

    def start(self, names: Sequence[str], epochs: int, steps_per_epoch: int) -> None:
        """The loss names every worker adds (a fixed order, so the all-reduce matches), and the stage's length."""
        self.names = list(names)
        self._steps_per_epoch = max(1, steps_per_epoch)
        self._interval = interval(epochs * self._steps_per_epoch, self.every)

    def state(self) -> list[dict[str, Any]]:
        return list(self.points)

    def restore(self, points: list[dict[str, Any]] | None, start_epoch: int) -> None:
        """Points saved with a checkpoint; anything recorded after it (a crashed epoch) is dropped."""
        self.points = [p for p in (points or []) if p["epoch"] < start_epoch]

    # --- per step ---------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self._recording

    def begin_step(self, epoch: int, step: int) -> None:
        done = epoch * self._steps_per_epoch + step + 1  # optimiser steps done after this one
        self._recording = done % self._interval == 0
        if self._recording:
            self._sums, self._counts = {}, {}

    def add(self, **values: torch.Tensor) -> None:
        """Per-sample values of one micro-batch (no device sync); a no-op on steps not recorded."""
        if not self._recording:
            return
        for name, tensor in values.items():
            tensor = tensor.detach()
            self._sums[name] = self._sums[name] + tensor.sum() if name in self._sums else tensor.sum()
            self._counts[name] = self._counts.get(name, 0) + tensor.numel()

    def end_step(self, epoch: int, step: int, dist, scalars: Callable[[], dict[str, float]],
                 logits: torch.Tensor | None = None) -> None:
        """After the optimiser step: the reduced means plus `scalars()` (evaluated only when recording)."""
        if not self._recording:
            return
        self._recording = False
        point = self._point("step", epoch, epoch * self._steps_per_epoch + step + 1)
        point.update(self._reduced_means(dist))
        point.update(scalars())
        if logits is not None:
            point.update(self.weight_stats(logits))
        self.points.append(point)

    def end_epoch(self, epoch: int, values: dict[str, float], logits: torch.Tensor | None = None) -> None:
        point = self._point("epoch", epoch, (epoch + 1) * self._steps_per_epoch)
        point.update(values)
        if logits is not None:
            point.update(self.weight_stats(logits))
            point.update(self.aurocs(logits))
        self.points.append(point)

    def _point(self, kind: str, epoch: int, step: int) -> dict[str, Any]:
        return {"stage": self.stage, "kind": kind, "step": step, "epoch": epoch}

    def _reduced_means(self, dist) -> dict[str, float]:
        device = dist.device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        sums = [self._sums.get(n, zero).to(device=device, dtype=torch.float64) for n in self.names]
        counts = torch.tensor([float(self._counts.get(n, 0)) for n in self.names], dtype=torch.float64, device=device)
        totals = dist.all_reduce_sum_(torch.cat([torch.stack(sums), counts])).tolist()
        n = len(self.names)
        return {name: totals[i] / totals[n + i] for i, name in enumerate(self.names) if totals[n + i] > 0}

    # --- p(omega) ---------------------------------------------------------------------------------

    def weight_stats(self, logits: torch.Tensor) -> dict[str, float]:
        weights = selector_weights(logits.detach().double(), self.activation or "softmax").cpu()
        return weight_stats(weights, self._labels, self.label_names)

    def aurocs(self, logits: torch.Tensor) -> dict[str, float]:
        if self._labels is None:
            return {}
        scores = logits.detach().double().cpu()
        out = {}
        for bad in BAD_LABELS:
            if bad not in self.label_names or "clean" not in self.label_names:
                continue
            clean, other = self.label_names.index("clean"), self.label_names.index(bad)
            rows = (self._labels == clean) | (self._labels == other)
            out[f"auroc_{bad}"] = auroc(scores[rows].tolist(), (self._labels[rows] == clean).tolist())
        return out

    def write(self, path: str | Path) -> None:
        write_points(Path(path), self.points)


def weight_stats(weights: torch.Tensor, labels: torch.Tensor | None, label_names: Sequence[str]) -> dict[str, float]:
    """Summary of p(omega): range, mean, entropy and effective sample size of the normalised weights,
    and (with labels) the share of the total weight on each label."""
    total = weights.sum()
    share = weights / total if total > 0 else torch.full_like(weights, 1.0 / weights.numel())
    positive = share[share > 0]
    values = [weights.min(), weights.max(), weights.mean(), -(positive * positive.log()).sum(),
              total**2 / (weights**2).sum().clamp_min(1e-300) / weights.numel()]
    names = ["weight/min", "weight/max", "weight/mean", "weight/entropy", "weight/ess_fraction"]
    if labels is not None:
        for index, label in enumerate(label_names):
            values.append(share[labels == index].sum())
            names.append(f"weight/share_{label}")
    return dict(zip(names, torch.stack(values).tolist()))


def seal_terms(ft_losses: torch.Tensor, weights: torch.Tensor, safe_losses: torch.Tensor,
               aux_losses: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The selector loop's per-sample curve values of one micro-batch (algorithms.seal_objectives' terms)."""
    ft, p = ft_losses.detach(), weights.detach()
    gap = ft - aux_losses.detach() if aux_losses is not None else ft
    terms = {"upper_loss": safe_losses, "ft_loss": ft, "lower_loss": p * ft, "selector_gap": gap,
             "selector_objective": p * gap}
    if aux_losses is not None:
        terms["aux_loss"] = aux_losses
    return terms


SEAL_TERMS = ("upper_loss", "ft_loss", "lower_loss", "selector_gap", "selector_objective")


# --- files ----------------------------------------------------------------------------------------


def write_points(path: Path, points: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(p, allow_nan=True) + "\n" for p in points))


def parse_points(text: str) -> list[dict[str, Any]]:
    """Points of a curves file; a line cut short (a copy in progress) is skipped, not an error."""
    points = []
    for line in text.splitlines():
        try:
            point = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(point, dict) and "stage" in point and "step" in point:
            points.append(point)
    return points


def cell_curves_rel(cell_id: str, seed: int) -> str:
    return f"curves/{cell_id}-s{seed}.jsonl"


def copy_cell_curves(folder: Storage, cell_id: str, seed: int, stage_dirs: dict[str, Path]) -> int:
    """One sweep entry's curves (every training stage it ran or reused) into the sweep folder; returns points."""
    text = ""
    for stage in TRAINING_STAGES:
        path = stage_dirs[stage] / CURVES_FILE if stage in stage_dirs else None
        if path is not None and path.is_file():
            text += path.read_text()
    if text:
        folder.write_text(cell_curves_rel(cell_id, seed), text)
    return text.count("\n")
