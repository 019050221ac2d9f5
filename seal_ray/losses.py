"""The per-sample loss of SEAL.md: mean token NLL over the response tokens (prompt tokens masked)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seal_ray.batching import IGNORE


def per_sample_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """l(theta; z_i) for every sample of the batch, shape [B], differentiable in the model.

    `batch` is padded (batching.collate: one sample per row) or packed (batching.collate_packed:
    `segments` says which sample each token belongs to)."""
    token_nll, mask = _response_token_nll(model, batch)
    if "segments" not in batch:
        return (token_nll * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    # Sum each sample's tokens wherever they sit; the extra last slot collects the padding.
    segments = batch["segments"][:, 1:].reshape(-1)
    slots = batch["ids"].numel() + 1
    sums = token_nll.new_zeros(slots).index_add(0, segments, (token_nll * mask).reshape(-1))
    counts = mask.new_zeros(slots).index_add(0, segments, mask.reshape(-1))
    return (sums / counts.clamp(min=1.0))[:-1]


def response_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(response | prompt) of every row of a padded batch, summed over the response tokens (eos
    included), shape [B]."""
    token_nll, mask = _response_token_nll(model, batch)
    return -(token_nll * mask).sum(dim=1)


def _response_token_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(token NLL of every next-token prediction, 1 where it is a response token), both [rows, width - 1]."""
    if "segments" in batch:
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
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
