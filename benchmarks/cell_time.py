"""Issue 3 target: the default cell runs single-process in under 2 minutes on this machine.

Runs `seal-ray run` on the default config (method seal) with a fresh stage cache, so every stage is
computed: the base model, the selector, the SEAL fine-tune, the Standard SFT reference it is judged
against, both generations and the judge. Prints the wall time and each stage's share.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 120.0


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cell"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "seal_ray.cli", "run", "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
        markers = [json.loads(p.read_text()) for p in out.glob("stages/*/*/_COMPLETE.json")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("stage       computed  seconds")
    for marker in sorted(markers, key=lambda m: -m["seconds"]):
        print(f"{marker['stage']:<11} {marker['hash'][:8]}  {marker['seconds']:7.1f}")
    print(f"default cell (seal + its SFT reference, cold cache): {wall:.1f} s wall; "
          f"winrate/hexphi {metrics['winrate/hexphi']:.1f}")
    print(f"RESULT cell_time_s={wall:.1f} target<={TARGET_S:.0f} {'met' if wall <= TARGET_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
