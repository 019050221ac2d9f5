"""The per-sample loss of SEAL.md: mean token NLL over the response tokens (prompt tokens masked)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seal_ray.batching import IGNORE


def per_sample_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """l(theta; z_i) for every row of the batch, shape [B], differentiable in the model."""
    token_nll, mask = _response_token_nll(model, batch)
    return (token_nll * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def response_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(response | prompt) of every row, summed over the response tokens (eos included), shape [B]."""
    token_nll, mask = _response_token_nll(model, batch)
    return -(token_nll * mask).sum(dim=1)


def _response_token_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = batch["labels"][:, 1:]
    token_nll = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shifted_labels.shape)
    mask = (shifted_labels != IGNORE).float()
    return token_nll, mask
