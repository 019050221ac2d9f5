"""`make demo`: the built-in study on the mini world, printed as tables."""

from __future__ import annotations

import sys

from seal_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", "run", "sweeps/demo.yaml", "--name", "demo", "--storage", "runs"]))
