"""Issue 4 target: Algorithm 1 (auxiliary model theta_hat) needs more peak memory than Algorithm 2.

The selector stage of the same cell (default config, same data and base model) runs with
selector.algorithm 1 and 2, each in a fresh process (resources.isolate_stages, so neither inherits
the other's heap), alternating twice; peak memory is the stage's own figure (peak RSS above its
baseline on CPU, torch.cuda.max_memory_allocated on GPU), the median of the repeats is reported.
The base model is trained for one epoch only: the selector's memory and time do not depend on how
well the base model was trained.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from seal_ray.config import load_cell_config
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import worker_spec
from seal_ray.stages import base, data, selector

REPEATS = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="config override (e.g. selector.epochs=1)")
    args = parser.parse_args()
    overrides = ["base.epochs=1", "resources.isolate_stages=true", *args.set]
    configs = {alg: load_cell_config(None, [*overrides, f"selector.algorithm={alg}"]) for alg in (1, 2)}
    executor = LocalExecutor(isolate=True)
    figures: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        data.run(configs[2], root / "data")
        (root / "base").mkdir()
        executor.run("base", base.worker, worker_spec(configs[2], root / "base", data_dir=root / "data"), root / "base",
                     lambda line: None)
        for repeat in range(REPEATS):
            for alg in (1, 2) if repeat % 2 == 0 else (2, 1):
                work_dir = root / f"selector-alg{alg}-{repeat}"
                work_dir.mkdir()
                spec = worker_spec(configs[alg], work_dir, data_dir=root / "data", base_dir=root / "base")
                figures[alg].append(executor.run("selector", selector.worker, spec, work_dir, lambda line: None)["measure"])

    peak = {alg: statistics.median(m["peak_mb"] for m in runs) for alg, runs in figures.items()}
    seconds = {alg: statistics.median(m["seconds"] for m in runs) for alg, runs in figures.items()}
    device = figures[1][0]["device"]
    print(f"selector stage, default config, {device}, median of {REPEATS} runs each (fresh process per run)")
    print(f"{'':<14}{'peak MB':>9}{'seconds':>9}   all peaks (MB)")
    for alg in (1, 2):
        print(f"{'Algorithm ' + str(alg):<14}{peak[alg]:>9.1f}{seconds[alg]:>9.1f}   "
              + ", ".join(f"{m['peak_mb']:.1f}" for m in figures[alg]))
    memory_ratio, time_ratio = peak[1] / peak[2], seconds[1] / seconds[2]
    print(f"Algorithm 1 / Algorithm 2: peak memory x{memory_ratio:.2f}, time x{time_ratio:.2f}")
    print(f"RESULT alg1_over_alg2_peak_memory={memory_ratio:.2f} target>1 {'met' if memory_ratio > 1 else 'NOT met'}")
    print(f"RESULT alg1_over_alg2_time={time_ratio:.2f} (reported) met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
