"""`make bench`: run every benchmark in one go and write docs/benchmarks.md.

Each benchmark prints `RESULT name=value target... met|NOT met` lines; they are collected into a table
next to the machine's description, with each benchmark's full output below.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = [
    ("cell_time.py", "default cell, single process (issue 3)"),
    ("train_overhead.py", "Ray Train 1-worker stage vs plain loop (issue 4)"),
    ("alg_memory.py", "Algorithm 1 vs Algorithm 2 peak memory and time (issue 4)"),
    ("sweep_overhead.py", "sweep makespan vs compute; stage-cache savings on demo.yaml (issue 5)"),
    ("generation.py", "batched vs one-at-a-time generation (issue 7)"),
    ("throughput.py", "training throughput vs the machine's limit; cell tokens per core-second vs 9d928f2 (issue 16)"),
    ("step_options.py", "eager attention and torch.compile vs the default training step (issue 16)"),
]
NOTES = "## Notes (kept by `make bench`"
RESULT = re.compile(r"^RESULT (\S+)=(\S+) (.*?)\s*(met|NOT met)$")


def machine() -> str:
    mem = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({model or 'unknown model'}){mem}, "
            f"no GPU used; Python {platform.python_version()}, torch {torch.__version__}")


def main() -> int:
    rows, sections = [], []
    for script, title in BENCHMARKS:
        path = REPO / "benchmarks" / script
        if not path.is_file():
            rows.append(f"| {title} | - | - | not run: benchmarks/{script} is missing |")
            continue
        print(f"== {script}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=REPO)
        output = done.stdout + (f"\n[stderr]\n{done.stderr[-2000:]}" if done.returncode else "")
        print(output, flush=True)
        found = [RESULT.match(line) for line in done.stdout.splitlines()]
        for match in filter(None, found):
            rows.append(f"| {title} | `{match.group(1)}` = {match.group(2)} | {match.group(3)} | {match.group(4)} |")
        if done.returncode or not any(found):
            rows.append(f"| {title} | - | - | failed (exit {done.returncode}) |")
        sections.append(f"### {script} ({time.perf_counter() - start:.0f} s)\n\n```\n{output.strip()}\n```\n")
    from seal_ray.provenance import git_commit

    text = (
        "# Benchmarks\n\nProduced by `make bench` (benchmarks/run_all.py) at commit "
        f"`{git_commit()}` on {time.strftime('%Y-%m-%d')}.\n\nMachine: {machine()}.\n\n"
        "Every figure is a ratio or time measured side by side in one run on this machine.\n\n"
        "| benchmark | figure | target | |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n## Output\n\n" + "\n".join(sections)
    )
    target = REPO / "docs" / "benchmarks.md"
    earlier = target.read_text() if target.is_file() else ""
    if NOTES in earlier:  # runs made alone and their reading are kept under the new figures
        text += "\n" + earlier[earlier.index(NOTES):]
    target.write_text(text)
    print(f"written to {REPO / 'docs' / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
