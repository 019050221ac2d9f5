"""`make demo`: the built-in study on the mini world (sweeps/demo.yaml) on a local Ray, then the tables.

A second run finds every cell done and every stage cached, says so, and only prints the tables.
"""

from __future__ import annotations

import sys
import time

from seal_ray.cli import main


def demo() -> int:
    start = time.perf_counter()
    code = main(["sweep", "run", "sweeps/demo.yaml", "--storage", "runs"])
    if code not in (0, 1):
        return code
    report = main(["report", "demo", "--storage", "runs", "--out", "runs/report"])
    print(f"demo finished in {time.perf_counter() - start:.0f} s; open runs/report/report.md", flush=True)
    return code or report


if __name__ == "__main__":
    sys.exit(demo())
