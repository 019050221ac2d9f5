"""Issue 16: two candidate speed-ups of the training step, measured against the default, and whether they pay.

On the default mini model and D_ft's default (packed) fine-tuning batches, one torch thread, CPU time,
each variant in a fresh process (as every isolated stage is):
- `sdpa`: the default (transformers' scaled-dot-product attention);
- `eager`: transformers' eager attention (matmul, softmax, matmul);
- `compiled`: `torch.compile(per_sample_loss, dynamic=True)` with inductor, once with an empty compile
  cache (a new machine) and once more reading the cache the first run wrote (every later stage).
For each: the seconds before the first step is done (compile included) and CPU ms per step after it.
A compiled stage pays when its steps times the saving per step exceed its compile seconds: the
break-even step count is printed next to the default stages' step counts. Both variants change float
results (another draw of every stage's model, the base model's included), so they would be switched
on only where they pay.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

def measure(variant: str, steps: int) -> dict:
    """In this (fresh) process: seconds to the first step done, then CPU ms per step over `steps` more."""
    import time

    import torch

    from seal_ray.batching import global_batches
    from seal_ray.config import load_cell_config
    from seal_ray.distributed import LocalDist
    from seal_ray.losses import per_sample_loss
    from seal_ray.models import build_mini_model
    from seal_ray.stages import base, data
    from seal_ray.stages.common import encode, load_world
    from seal_ray.tokenizer import CharTokenizer
    from seal_ray.train_loop import Batcher, LoopStats

    torch.set_num_threads(1)
    config = load_cell_config(None, [])
    tokenizer = CharTokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        data.run(config, Path(tmp))
        encoded = encode(load_world(tmp)["ft"], tokenizer, config)
    model = build_mini_model(config.model, tokenizer, config.seed, base.MAX_POSITIONS)
    if variant == "eager":
        model.config._attn_implementation = "eager"
    batcher = Batcher([model], encoded, tokenizer.pad_token_id, LocalDist("cpu").device, pack=config.resources.pack_batches)
    ids, size = sorted(encoded), config.finetune.batch_size
    epochs = math.ceil((steps + 1) / math.ceil(len(ids) / size))
    order = [b for e in range(epochs) for b in global_batches(ids, size, config.seed, e)]
    batches = [batcher(encoded, b, LoopStats()) for b in order[: steps + 1]]
    loss = torch.compile(per_sample_loss, dynamic=True) if variant == "compiled" else per_sample_loss
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune.lr, weight_decay=0.0)

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=False)
        loss(model, batch).mean().backward()
        optimizer.step()

    wall = time.perf_counter()
    step(batches[0])
    first = time.perf_counter() - wall
    cpu = time.process_time()
    for batch in batches[1:]:
        step(batch)
    return {"first_s": first, "step_ms": (time.process_time() - cpu) / steps * 1000, "packed": batcher.packed}


def probe(variant: str, steps: int, cache: Path) -> dict:
    """measure() in a fresh process (as every isolated stage is), with `cache` as inductor's cache."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, __file__, "--probe", variant, str(steps)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{variant} probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_steps() -> dict[str, int]:
    """Optimiser steps of each default training stage (one worker)."""
    from seal_ray.config import load_cell_config

    config = load_cell_config(None, [])
    ft_rows = config.world.n_ft
    kept = math.floor(config.selection.topp * ft_rows)
    return {
        "base": config.base.epochs * math.ceil(config.world.n_base / config.base.batch_size),
        "selector": config.selector.epochs * math.ceil(ft_rows / config.selector.batch_size),
        "finetune (SEAL's selection)": config.finetune.epochs * math.ceil(kept / config.finetune.batch_size),
        "finetune (Standard SFT)": config.finetune.epochs * math.ceil(ft_rows / config.finetune.batch_size),
    }


def main() -> int:
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
        return 0
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200  # fewer steps: per-step figures vary by 20% from run to run
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "inductor"
        runs = {name: probe(variant, steps, cache) for name, variant in
                (("sdpa (default)", "sdpa"), ("eager attention", "eager"), ("compiled, empty cache", "compiled"),
                 ("compiled, warm cache", "compiled"))}
    print(f"default mini model, D_ft fine-tuning batches (packed: {runs['sdpa (default)']['packed']}), "
          f"{steps} steps after the first, 1 torch thread, a fresh process each")
    print(f"{'variant':<24}{'first step s':>14}{'CPU ms/step':>13}{'vs default':>12}")
    default = runs["sdpa (default)"]
    for name, run in runs.items():
        print(f"{name:<24}{run['first_s']:>14.1f}{run['step_ms']:>13.1f}{default['step_ms'] / run['step_ms']:>11.2f}x")
    saving_ms = default["step_ms"] - runs["compiled, warm cache"]["step_ms"]
    extra_s = runs["compiled, warm cache"]["first_s"] - default["first_s"]
    break_even = math.ceil(extra_s * 1000 / saving_ms) if saving_ms > 0 else None
    print(f"compiled, warm cache: {extra_s:.1f} s more before the first step, {saving_ms:.1f} ms less per step: "
          + (f"pays after {break_even} steps" if break_even else "never pays"))
    for stage, n in default_steps().items():
        verdict = "pays" if break_even and n > break_even else "does not pay"
        print(f"  {stage:<30}{n:>6} steps: {verdict}")
    print(f"RESULT compile_speedup_per_step={default['step_ms'] / runs['compiled, warm cache']['step_ms']:.2f} (reported) met")
    print(f"RESULT compile_break_even_steps={break_even if break_even else float('inf')} (reported) met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
