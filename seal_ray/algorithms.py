"""The SEAL update steps (SEAL.md, Algorithm 1 and Algorithm 2) as objectives whose gradients are the updates.

All three objectives are computed from one forward pass at the current parameters, with every loss
detached where SEAL.md says so, and each touches its own parameters only (theta, omega, theta_hat). So
one backward of their sum gives every group its own gradient; gradients accumulate over micro-batches
and all-reduce over workers before the optimiser steps, which makes the update independent of how a
global batch is split. Each loss sum is divided by the *global* batch size (`ft_denom`, `safe_denom`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SealObjectives:
    theta: torch.Tensor  # w * f_S(theta) + (1 - w) * mean_B p_i * l_i(theta), p detached
    selector: torch.Tensor  # mean_B p_i(omega) * (l_i(theta) - l_i(theta_hat)), losses detached
    aux: torch.Tensor | None  # Algorithm 1 only: mean_B p_i * l_i(theta_hat), p detached

    def total(self) -> torch.Tensor:
        total = self.theta + self.selector
        return total + self.aux if self.aux is not None else total


def seal_objectives(
    *,
    ft_losses: torch.Tensor,
    ft_weights: torch.Tensor,
    safe_losses: torch.Tensor,
    upper_weight: float,
    ft_denom: int,
    safe_denom: int,
    aux_losses: torch.Tensor | None = None,
) -> SealObjectives:
    """Algorithm 2 when `aux_losses` is None, Algorithm 1 (with theta_hat's per-sample losses) otherwise.

    ft_losses: l_i(theta) for the local fine-tuning ids (with grad in theta).
    ft_weights: p_i(omega) for the same ids (with grad in omega).
    safe_losses: l(theta; z) for the local safe rows.
    """
    weights_fixed = ft_weights.detach()
    upper = upper_weight * safe_losses.sum() / safe_denom if safe_losses.numel() else ft_losses.sum() * 0.0
    lower = (weights_fixed * ft_losses).sum() / ft_denom
    theta_objective = upper + (1.0 - upper_weight) * lower

    # The reference code does not scale the selector step by gamma: omega moves from epoch 1 on.
    gap = ft_losses.detach()
    aux_objective = None
    if aux_losses is not None:
        gap = gap - aux_losses.detach()
        aux_objective = (weights_fixed * aux_losses).sum() / ft_denom
    selector_objective = (ft_weights * gap).sum() / ft_denom
    return SealObjectives(theta=theta_objective, selector=selector_objective, aux=aux_objective)


def sft_objective(losses: torch.Tensor, denom: int) -> torch.Tensor:
    """Plain SFT: the mean per-sample loss over the global batch."""
    return losses.sum() / denom
