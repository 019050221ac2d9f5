"""Issue 16: training throughput next to the machine's limit, and a cell's tokens per core-second vs 9d928f2.

Measured side by side in one run, on one torch thread, in CPU time (the machine is shared: CPU time of
this process tree is what the work itself costs, whatever else runs):

1. The machine's limit: FLOP/s of a large fp32 matmul on one thread, and the default mini model's
   training FLOPs per (non-padding) token; the pipeline loop's achieved share of that peak.
2. The pipeline's training loop (train_loop.train_sft on D_ft, the data of the selector and fine-tuning
   stages, in their default batches: packed, as the base stage's since 2026-12-08) against a minimal
   forward-backward-step loop over the very same batches, collated beforehand:
   `loop_vs_minimal_ratio`. The share of padding tokens in those batches: `padding_share`.
3. A whole cell (seal + its Standard SFT reference, cold cache, `seal-ray run`) of this code and of
   commit 9d928f2 (checked out into a git worktree and imported from there), on the same cell config
   (9d928f2's defaults): non-padding training tokens (base, selector, both fine-tunes) per core-second
   of the whole process tree: `tokens_per_core_s_vs_9d928f2`. From this code's cell: the share of the
   selector's and fine-tuning stages' wall time spent outside their training loops
   (`stage_startup_overhead_share`), and the share of the cell spent generating and judging.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BASE_COMMIT = "9d928f2"
TRAINING_STAGES = ("base", "selector", "finetune")
TARGETS = {"stage_startup_overhead_share": ("<=", 0.05), "loop_vs_minimal_ratio": (">=", 0.95),
           "padding_share": ("<=", 0.15), f"tokens_per_core_s_vs_{BASE_COMMIT}": (">=", 2.0)}


def result(name: str, value: float) -> None:
    op, target = TARGETS[name]
    met = value <= target if op == "<=" else value >= target
    print(f"RESULT {name}={value:.3f} target{op}{target} {'met' if met else 'NOT met'}")


def matmul_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """The core's practical fp32 peak: the best of a few n x n matmuls, in CPU time."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * n**3 / best


def training_flops_per_token(model, mean_length: float) -> float:
    """Forward + backward FLOPs per token: 6 per weight of every matmul (the tied lm_head included, the
    embedding lookup not) plus attention's 12 * layers * hidden * (causal) context."""
    config = model.config
    matmul_weights = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in name)
    matmul_weights += config.vocab_size * config.hidden_size  # lm_head (tied to the embedding)
    return 6 * matmul_weights + 12 * config.num_hidden_layers * config.hidden_size * mean_length / 2


def minimal_loop(model, batches, lr: float) -> None:
    """What training fundamentally costs: forward, loss, backward, optimiser step; nothing else."""
    from seal_ray.losses import per_sample_loss

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for batch, denom in batches:
        optimizer.zero_grad(set_to_none=False)
        (per_sample_loss(model, batch).sum() / denom).backward()
        optimizer.step()


def loop_figures(epochs: int, rounds: int) -> dict[str, float]:
    from seal_ray.batching import global_batches, local_share, micro_batches
    from seal_ray.checkpoints import Checkpointer
    from seal_ray.config import load_cell_config
    from seal_ray.distributed import LocalDist
    from seal_ray.models import build_mini_model
    from seal_ray.stages import base, data
    from seal_ray.stages.common import encode, load_world
    from seal_ray.tokenizer import CharTokenizer
    from seal_ray.train_loop import Batcher, LoopStats, micro_batch_size, train_sft

    torch.set_num_threads(1)
    config = load_cell_config(None, [])
    tokenizer, dist = CharTokenizer(), LocalDist("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data.run(config, Path(tmp))
        encoded = encode(load_world(tmp)["ft"], tokenizer, config)
    ids, size, pad = sorted(encoded), config.finetune.batch_size, tokenizer.pad_token_id

    def model():
        return build_mini_model(config.model, tokenizer, config.seed, base.MAX_POSITIONS)

    # The pipeline's batches, collated beforehand for the minimal loop.
    batcher, counted = Batcher([model()], encoded, pad, dist.device, pack=config.resources.pack_batches), LoopStats()
    micro = micro_batch_size(size, 1, config.resources.micro_batch_size)
    batches = [(batcher(encoded, m, counted), len(b)) for e in range(epochs)
               for b in global_batches(ids, size, config.seed, e) for m in micro_batches(local_share(b, 0, 1), micro)]
    pipeline_s = minimal_s = 0.0
    for _ in range(rounds):  # alternated, so both see the same machine
        start = time.process_time()
        minimal_loop(model(), batches, config.finetune.lr)
        minimal_s += time.process_time() - start
        start = time.process_time()
        stats = train_sft(model(), encoded, ids, stage="finetune", epochs=epochs, lr=config.finetune.lr, batch_size=size,
                          seed=config.seed, pad_id=pad, dist=dist, checkpointer=Checkpointer(None, dist),
                          micro_batch=config.resources.micro_batch_size, pack=config.resources.pack_batches,
                          log=lambda line: None)
        pipeline_s += time.process_time() - start
    mean_length = stats.tokens / stats.samples
    return {"pipeline_tokens_per_s": rounds * stats.tokens / pipeline_s, "minimal_tokens_per_s": rounds * stats.tokens / minimal_s,
            "padding_share": 1 - stats.tokens / stats.computed_tokens, "packed": batcher.packed,
            "flops_per_token": training_flops_per_token(model(), mean_length), "mean_length": mean_length}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cell(code_dir: Path, config_file: Path, out: Path) -> dict:
    """`seal-ray run` of the code in `code_dir` (imported from there), cold cache: wall, CPU time, stages."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    imported = subprocess.run([sys.executable, "-c", "import seal_ray; print(seal_ray.__file__)"], cwd=code_dir, env=env,
                              capture_output=True, text=True, check=True).stdout.strip()
    if not Path(imported).resolve().is_relative_to(code_dir.resolve()):
        raise SystemExit(f"the cell of {code_dir} would import seal_ray from {imported}")
    cpu, start = _children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "seal_ray.cli", "run", str(config_file), "--out", str(out)],
                   cwd=code_dir, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    markers = [json.loads(p.read_text()) for p in out.glob("stages/*/*/_COMPLETE.json")]
    tokens = sum(m["measure"]["tokens_per_s"] * m["measure"]["seconds"] for m in markers if m["stage"] in TRAINING_STAGES)
    return {"wall": wall, "cpu": cpu, "tokens": tokens, "markers": markers, "code": imported}


def base_worktree(root: Path) -> Path:
    path = root / f"seal-ray-{BASE_COMMIT}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), BASE_COMMIT], check=True,
                   capture_output=True)
    return path


def cell_figures(root: Path) -> dict:
    old = base_worktree(root)
    try:
        config_file = root / "cell.yaml"  # 9d928f2's default cell, for both (JSON is YAML)
        subprocess.run([sys.executable, "-c", "import json, sys; from seal_ray.config import load_cell_config, to_dict; "
                        "config = to_dict(load_cell_config(None, [])); json.dump(config, open(sys.argv[1], 'w'))",
                        str(config_file)], cwd=old, env={**os.environ, "PYTHONPATH": str(old)}, check=True)
        return {"old": run_cell(old, config_file, root / "old"), "new": run_cell(REPO, config_file, root / "new")}
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)


def print_cell(cells: dict) -> None:
    print(f"cell (seal + its SFT reference, cold cache, {BASE_COMMIT}'s default config), whole process tree:")
    print(f"{'':<10}{'wall s':>8}{'CPU s':>8}{'train tokens':>14}{'tokens/core-s':>15}")
    for name, label in (("old", BASE_COMMIT), ("new", "this code")):
        c = cells[name]
        print(f"{label:<10}{c['wall']:>8.1f}{c['cpu']:>8.1f}{c['tokens']:>14.0f}{c['tokens'] / c['cpu']:>15.0f}")
    new = cells["new"]
    print("this code's stages: stage seconds (store), loop seconds, outside the loop, padding share")
    for m in sorted(new["markers"], key=lambda m: -m["seconds"]):
        measure = m.get("measure", {})
        loop = measure.get("loop_seconds", 0.0)
        outside = f"{m['seconds'] - loop:6.2f}" if loop else "     -"
        padding = f"{measure['padding_share']:.3f}" if loop else "-"
        print(f"  {m['stage']:<10}{m['hash'][:8]}  {m['seconds']:7.2f}  {loop:7.2f}  {outside}  {padding}")
    shares = {s: sum(m["seconds"] for m in new["markers"] if m["stage"] == s) / new["wall"] for s in ("generate", "judge")}
    print(f"share of the cell's wall time: generation {shares['generate']:.3f}, judging {shares['judge']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of D_ft per loop measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the minimal and the pipeline loop")
    parser.add_argument("--no-cell", action="store_true", help="skip the whole-cell comparison with 9d928f2")
    parser.add_argument("--no-loop", action="store_true", help="skip the loop measurements (only the cells)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.no_loop:
        measure_loop(args.epochs, args.rounds)
    if not args.no_cell:
        measure_cells()
    return 0


def measure_loop(epochs: int, rounds: int) -> None:
    peak = matmul_peak_flops()
    loop = loop_figures(epochs, rounds)
    achieved = loop["pipeline_tokens_per_s"] * loop["flops_per_token"]
    print(f"machine: {os.cpu_count()} CPUs, 1 torch thread; load average (1 min) now {os.getloadavg()[0]:.1f}")
    print(f"1-thread fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s (1024^3, best of 5, CPU time)")
    print(f"default mini model: {loop['flops_per_token'] / 1e3:.0f} kFLOP per trained token (fwd+bwd, mean sample "
          f"{loop['mean_length']:.1f} tokens); batches packed: {loop['packed']}")
    print(f"D_ft training (fine-tuning batches), {epochs} epochs x {rounds} rounds, tokens per CPU second: pipeline loop "
          f"{loop['pipeline_tokens_per_s']:.0f}, minimal loop {loop['minimal_tokens_per_s']:.0f}")
    print(f"pipeline loop: {achieved / 1e9:.1f} GFLOP/s on non-padding tokens = {achieved / peak:.3f} of the matmul peak")
    result("loop_vs_minimal_ratio", loop["pipeline_tokens_per_s"] / loop["minimal_tokens_per_s"])
    result("padding_share", loop["padding_share"])


def measure_cells() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cells = cell_figures(Path(tmp))
    print_cell(cells)
    new = cells["new"]
    heavy = [m for m in new["markers"] if m["stage"] in ("selector", "finetune")]
    overhead = sum(m["seconds"] - m["measure"]["loop_seconds"] for m in heavy) / sum(m["seconds"] for m in heavy)
    result("stage_startup_overhead_share", overhead)
    old = cells["old"]
    result(f"tokens_per_core_s_vs_{BASE_COMMIT}", (new["tokens"] / new["cpu"]) / (old["tokens"] / old["cpu"]))
    print(f"(wall-time ratio, for reference: {(new['tokens'] / new['wall']) / (old['tokens'] / old['wall']):.2f}; "
          f"load average (1 min) at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    sys.exit(main())
