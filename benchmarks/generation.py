"""Issue 7 target: batched generation (left padding) is at least 5x faster than one prompt at a time.

The same model answers the same 64 prompts of the mini world's test sets twice, side by side in
this run: through `generate_batch` with all prompts in one left-padded batch, and
through the same function one prompt at a time. Every answer is exactly `max_new_tokens` long on
both sides (the stop token is mapped to an id the model cannot produce), so both do equal work;
greedy decoding, one torch thread. Reported: the ratio of wall times, best of 2 alternating repeats.

The target is measured on the model the pipeline generates with (the default mini model: hidden 64,
2 layers). The same comparison on a larger Llama (hidden 256, 4 layers) is printed beside it: on one
CPU thread its forward pass is compute-bound, so batching saves less there; on a GPU, where a batch
of 64 costs about what one prompt does, the gain is larger.
"""

from __future__ import annotations

import time

import torch

from seal_ray.config import GenerationConfig, ModelConfig, WorldConfig
from seal_ray.generation import generate_batch
from seal_ray.models import build_mini_model
from seal_ray.tokenizer import CharTokenizer
from seal_ray.world import make_world

PROMPTS = 64
MAX_NEW_TOKENS = 32
REPEATS = 2
TEMPLATE = "Human: {}\nAssistant: "


class _NoStopTokenizer(CharTokenizer):
    """The mini tokenizer with an end-of-sequence id outside the vocabulary: answers never stop early."""

    def __init__(self) -> None:
        super().__init__()
        self.eos_token_id = self.vocab_size + 1


def _timed(fn) -> tuple[float, list[str]]:
    start = time.perf_counter()
    answers = fn()
    return time.perf_counter() - start, answers


def measure(hidden: int, layers: int) -> float:
    tokenizer = _NoStopTokenizer()
    model = build_mini_model(ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4), CharTokenizer(), seed=0).eval()
    world = make_world(WorldConfig(n_test_hh=32, n_test_orca=32, hexphi_per_category=1), seed=0)
    prompts = [row["prompt"] for row in world["hh"] + world["orca"]][:PROMPTS]
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, batch_size=PROMPTS)
    device = torch.device("cpu")

    def batched() -> list[str]:
        return generate_batch(model, tokenizer, prompts, TEMPLATE, config, device)

    def one_at_a_time() -> list[str]:
        return [generate_batch(model, tokenizer, [p], TEMPLATE, config, device)[0] for p in prompts]

    batch_times, single_times = [], []
    for _ in range(REPEATS):
        seconds, batch_answers = _timed(batched)
        batch_times.append(seconds)
        seconds, single_answers = _timed(one_at_a_time)
        single_times.append(seconds)
    same = sum(a == b for a, b in zip(batch_answers, single_answers))
    speedup = min(single_times) / min(batch_times)
    print(f"model hidden {hidden}, {layers} layers: {len(prompts)} prompts x {MAX_NEW_TOKENS} new tokens, greedy, 1 thread")
    print(f"batched (1 batch of {len(prompts)}, left-padded): {min(batch_times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in batch_times)})")
    print(f"one prompt at a time: {min(single_times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in single_times)})")
    print(f"every answer ran {MAX_NEW_TOKENS} decoding steps (stop token unreachable); "
          f"identical answers batched vs alone: {same}/{len(prompts)}")
    print(f"speedup {speedup:.2f}x\n")
    return speedup


def main() -> int:
    torch.set_num_threads(1)
    defaults = ModelConfig()
    speedup = measure(defaults.hidden_size, defaults.num_layers)
    measure(256, 4)
    print(f"RESULT generation_batched_speedup={speedup:.2f} target>=5 {'met' if speedup >= 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
