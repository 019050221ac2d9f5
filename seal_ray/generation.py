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


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the tokenizer's eos and those of the model's generation config.

    Llama-3-Instruct ends a turn with <|eot_id|>, listed in its generation_config.json beside
    <|end_of_text|>; passing only the tokenizer's eos to `generate` would override that list and
    let every answer run to max_new_tokens.
    """
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, (list, tuple)) else [configured]:
        if token is not None and token not in stops:
            stops.append(int(token))
    return stops


def sampling_arguments(config: GenerationConfig) -> dict:
    """`generate` keyword arguments of the decoding settings (SEAL.md evaluation: top_p 0.9, temperature 1.0,
    repetition penalty 1.2 with sampling); greedy decoding passes no sampling knobs."""
    sampling = dict(do_sample=True, top_p=config.top_p, temperature=config.temperature) if config.do_sample else dict(do_sample=False)
    return dict(max_new_tokens=config.max_new_tokens, repetition_penalty=config.repetition_penalty, **sampling)


@torch.no_grad()
def generate_batch(
    model, tokenizer, prompts: list[str], template: str, config: GenerationConfig, device, *, min_new_tokens: int = 0
) -> list[str]:
    """Answers to `prompts` in one left-padded batch (a decoder-only model continues from the last column).

    `min_new_tokens` forbids the stop tokens before that many new tokens (benchmarks: equal work per answer).
    """
    encoded = [encode_prompt(tokenizer, p, template) for p in prompts]
    input_ids, attention = _left_padded(encoded, tokenizer.pad_token_id, device)
    stops = stop_token_ids(model, tokenizer)
    extra = dict(min_new_tokens=min_new_tokens) if min_new_tokens else {}
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops[0] if len(stops) == 1 else (stops or None),
        **sampling_arguments(config),
        **extra,
    )
    answers = []
    for row in output[:, input_ids.shape[1] :].tolist():
        ends = [row.index(token) for token in stops if token in row]
        answers.append(tokenizer.decode(row[: min(ends)] if ends else row, skip_special_tokens=True).strip())
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


@torch.no_grad()
def refusal_margins(model, tokenizer, rows: list[dict], template: str, device, batch_size: int = 64) -> list[float]:
    """Per harmful prompt, log p(refusal) - log p(compliant answer) under the model (rows carry both texts).

    A continuous safety figure beside the greedy 0/1 refusal: it moves before the refusal flips."""
    from seal_ray.batching import collate, encode_rows
    from seal_ray.losses import response_logprob

    was_training = model.training
    model.eval()
    margins: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        logprobs = {}
        for kind in ("refusal", "compliance"):
            pairs = [{"id": i, "prompt": row["prompt"], "response": row[kind]} for i, row in enumerate(chunk)]
            encoded = encode_rows(pairs, tokenizer, template, max_len=10**9)
            batch = collate([encoded[i] for i in range(len(chunk))], tokenizer.pad_token_id)
            logprobs[kind] = response_logprob(model, {k: v.to(device) for k, v in batch.items()})
        margins += (logprobs["refusal"] - logprobs["compliance"]).float().cpu().tolist()
    model.train(was_training)
    return margins
