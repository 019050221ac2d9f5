"""Batched generation for evaluation: left-padded prompts, sharded across workers by position."""

from __future__ import annotations

import torch

from seal_ray.batching import encode_prompt
from seal_ray.config import GenerationConfig
from seal_ray.distributed import LocalDist


def _left_padded(prompt_ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    return input_ids.to(device), attention.to(device)


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], template: str, config: GenerationConfig, device) -> list[str]:
    encoded = [encode_prompt(tokenizer, p, template) for p in prompts]
    input_ids, attention = _left_padded(encoded, tokenizer.pad_token_id, device)
    sampling = dict(do_sample=True, top_p=config.top_p, temperature=config.temperature) if config.do_sample else dict(do_sample=False)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        max_new_tokens=config.max_new_tokens,
        repetition_penalty=config.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    answers = []
    for row in output[:, input_ids.shape[1] :].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


def generate_answers(
    model, tokenizer, prompts: list[str], template: str, config: GenerationConfig, dist: LocalDist, seed: int
) -> list[str]:
    """Answers for every prompt, in order. Worker r generates prompts r, r+W, ...; all workers get all answers."""
    model.eval()
    mine = list(range(dist.rank, len(prompts), dist.world_size))
    # Sampling is seeded per worker so a sweep's generations are reproducible for a fixed worker count.
    torch.manual_seed(seed * 7_919 + dist.rank)
    local: dict[int, str] = {}
    for start in range(0, len(mine), config.batch_size):
        chunk = mine[start : start + config.batch_size]
        for index, answer in zip(chunk, generate_batch(model, tokenizer, [prompts[i] for i in chunk], template, config, dist.device)):
            local[index] = answer
    merged: dict[int, str] = {}
    for part in dist.all_gather_objects(local):
        merged.update(part)
    return [merged[i] for i in range(len(prompts))]
