"""Issue 7 target: batched generation (left padding) is at least 5x faster than one prompt at a time.

The model the pipeline generates with (the mini world's default Llama, hidden 64, 2 layers) answers the same 64 prompts of the mini world's test sets twice, side by side
in this run: through `generate_batch` with all prompts in one left-padded batch, and through the
same function one prompt at a time. Both sides decode greedily with min_new_tokens = max_new_tokens,
so every answer is exactly max_new_tokens long and both do equal work. Reported: the ratio of wall
times, best of 2 alternating repeats.

Both sides get the same torch threads (`--threads`, default 1: the pipeline's resources.torch_threads).
For reference the same comparison runs first on a larger Llama (hidden 256, 4 layers) at 1 and 2
threads: on one CPU thread its batch of 64 is compute-bound and batching gains only about 4x; it gains
more the more parallel the hardware (on a GPU a batch of 64 costs about what one prompt does).
"""

from __future__ import annotations

import argparse
import time

import torch

from seal_ray.config import GenerationConfig, ModelConfig, WorldConfig
from seal_ray.generation import generate_batch
from seal_ray.models import build_mini_model
from seal_ray.tokenizer import CharTokenizer
from seal_ray.world import make_world

PROMPTS = 64
REPEATS = 2
TEMPLATE = "Human: {}\nAssistant: "
TARGET = 5.0


def _timed(fn) -> tuple[float, list[str]]:
    start = time.perf_counter()
    answers = fn()
    return time.perf_counter() - start, answers


def measure(hidden: int, layers: int, new_tokens: int, threads: int) -> float:
    torch.set_num_threads(threads)
    tokenizer = CharTokenizer()
    model = build_mini_model(ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=4), tokenizer, seed=0).eval()
    world = make_world(WorldConfig(n_test_hh=PROMPTS // 2, n_test_orca=PROMPTS // 2, hexphi_per_category=1), seed=0)
    prompts = [row["prompt"] for row in world["hh"] + world["orca"]][:PROMPTS]
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, batch_size=PROMPTS)
    device = torch.device("cpu")

    def batched() -> list[str]:
        return generate_batch(model, tokenizer, prompts, TEMPLATE, config, device, min_new_tokens=new_tokens)

    def one_at_a_time() -> list[str]:
        return [generate_batch(model, tokenizer, [p], TEMPLATE, config, device, min_new_tokens=new_tokens)[0] for p in prompts]

    batch_times, single_times = [], []
    for _ in range(REPEATS):
        seconds, batch_answers = _timed(batched)
        batch_times.append(seconds)
        seconds, single_answers = _timed(one_at_a_time)
        single_times.append(seconds)
    same = sum(a == b for a, b in zip(batch_answers, single_answers))
    speedup = min(single_times) / min(batch_times)
    print(f"tiny Llama hidden {hidden}, {layers} layers, {threads} torch thread(s): "
          f"{len(prompts)} prompts x {new_tokens} new tokens (min_new_tokens = max_new_tokens), greedy")
    print(f"  batched (1 left-padded batch of {len(prompts)}): {min(batch_times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in batch_times)})")
    print(f"  one prompt at a time: {min(single_times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in single_times)})")
    print(f"  identical answers batched vs alone: {same}/{len(prompts)}; speedup {speedup:.2f}x\n")
    return speedup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = ModelConfig()
    parser.add_argument("--hidden", type=int, default=defaults.hidden_size, help="hidden size (default: the mini model's)")
    parser.add_argument("--layers", type=int, default=defaults.num_layers, help="transformer layers")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per answer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    args = parser.parse_args()
    for threads in (1, 2):  # for reference: a larger model, where one CPU thread is compute-bound
        measure(256, 4, args.new_tokens, threads)
    speedup = measure(args.hidden, args.layers, args.new_tokens, args.threads)
    print(f"RESULT generation_batched_speedup={speedup:.2f} target>={TARGET:g} {'met' if speedup >= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
