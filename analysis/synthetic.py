"""Results rows in the schema of docs/results_schema.md, built by hand: for tests, and for trying the
report without running a sweep (`python -m analysis.synthetic OUT_DIR`)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.ablations import (
    ACTIVATION, ALGORITHM, METHOD, PENALTY_DECAY, PENALTY_GAMMA, PENALTY_KIND, SAFE_FRACTION, SAFE_FRACTION_UNIT,
    SELECTOR_EPOCH, SELECTOR_FILE)

# The swept leaves at the built-in defaults (seal_ray/config.py), plus one that never varies.
BASE_CONFIG: dict[str, Any] = {
    METHOD: "seal", SELECTOR_FILE: None, ACTIVATION: "softmax", SAFE_FRACTION: 0.2, SAFE_FRACTION_UNIT: "ft_size",
    PENALTY_KIND: "ramp", PENALTY_GAMMA: 0.0, PENALTY_DECAY: 0.03, ALGORITHM: 2, SELECTOR_EPOCH: "cycle_safe",
    "config/selection.topp": 0.8,
}
STAGES = ("base", "selector", "finetune", "generate")


def cell_id(config: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(dict(config), sort_keys=True, default=str).encode()).hexdigest()[:12]


def result_row(changes: Mapping[str, Any] | None = None, *, seed: int = 0, status: str = "done", error: str = "",
               metrics: Mapping[str, Any] | None = None, label: str | None = None) -> dict[str, Any]:
    """One cell x seed row: BASE_CONFIG with `changes` applied, then the metrics as given."""
    config = {**BASE_CONFIG, **(changes or {})}
    default_label = ",".join(f"{k.removeprefix('config/')}={v}" for k, v in (changes or {}).items()) or "reference"
    return {"sweep": "synthetic", "cell_id": cell_id(config), "label": label or default_label, "seed": seed,
            "status": status, "error": error, **config, "config/seed": seed, **(metrics or {})}


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


# Cells of sweeps/demo.yaml, as config changes over the base: (changes, effect on hh/orca/hexphi/refusal).
DEMO_CELLS: list[tuple[dict[str, Any], tuple[float, float, float, float]]] = [
    ({}, (6.0, 2.0, 12.0, 0.25)),
    ({ACTIVATION: "sigmoid"}, (3.0, 1.0, 7.0, 0.15)),
    ({ACTIVATION: "relu"}, (0.5, -1.0, 2.0, 0.05)),
    ({SAFE_FRACTION: 0.1}, (3.5, 1.0, 8.0, 0.18)),
    ({SAFE_FRACTION: 0.5}, (7.0, 2.5, 14.0, 0.30)),
    ({PENALTY_KIND: "fixed", PENALTY_GAMMA: 0.1}, (5.0, 2.0, 11.0, 0.22)),
    ({PENALTY_KIND: "fixed", PENALTY_GAMMA: 0.5}, (2.0, 3.0, 6.0, 0.12)),
    ({PENALTY_DECAY: 0.1}, (6.5, 2.0, 12.5, 0.26)),
    ({ALGORITHM: 1}, (6.2, 2.1, 12.3, 0.26)),
    ({METHOD: "sft"}, (0.0, 0.0, 0.0, 0.0)),
    ({METHOD: "random"}, (0.8, 0.5, 3.0, 0.04)),
    ({METHOD: "oracle"}, (9.0, 3.0, 18.0, 0.40)),
]


HARM_CATEGORIES = tuple(f"category_{i:02d}" for i in range(11))
# seal_ray.results.PROMPT_COLUMNS (analysis imports no seal_ray; tests/test_analysis_prompts.py checks they agree).
PROMPT_COLUMNS = ("cell_id", "seed", "test_set", "prompt_id", "prompt_key", "category", "win", "refused")


def demo_prompts(results: pd.DataFrame, per_set: int = 44, random_seed: int = 0) -> pd.DataFrame:
    """Per-prompt outcomes (the frame of seal_ray.results.load_prompts) for each done row of `results`,
    and the row's rates set to their realized means, so the two agree as they do in a real sweep.

    One uniform draw per seed x prompt is shared by every cell (u < rate: a win, or a refusal), so the
    cells of a seed are paired per prompt as the judge's verdicts against the same SFT answers are.
    """
    rng = np.random.default_rng(random_seed)
    shared: dict[tuple[int, str], np.ndarray] = {}
    parts = []
    for index, row in results[results["status"] == "done"].iterrows():
        seed, method = int(row["seed"]), row.get(METHOD)
        for test_set in ("hh", "orca", "hexphi"):
            draws = shared.setdefault((seed, test_set), rng.random(per_set))
            win = np.full(per_set, 0.5) if method == "sft" else (draws < row[f"winrate/{test_set}"] / 100).astype(float)
            part = {"cell_id": row["cell_id"], "seed": seed, "test_set": test_set, "prompt_id": np.arange(per_set),
                    "prompt_key": [f"{test_set}-{seed}-{i}" for i in range(per_set)], "win": win,
                    "category": [HARM_CATEGORIES[i % len(HARM_CATEGORIES)] if test_set == "hexphi" else None
                                 for i in range(per_set)], "refused": np.nan}
            results.loc[index, f"winrate/{test_set}"] = 100 * win.mean()
            if test_set == "hexphi":
                refusal_draws = shared.setdefault((seed, "refusal"), rng.random(per_set))
                part["refused"] = (refusal_draws < row["safety/refusal_rate"]).astype(float)
                results.loc[index, "safety/refusal_rate"] = part["refused"].mean()
            parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True).reindex(columns=list(PROMPT_COLUMNS))


def demo_results(seeds: int = 3, random_seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """Plausible numbers for every cell of the demo sweep: SFT at 50 by construction, noise per seed."""
    rng = np.random.default_rng(random_seed)
    rows = []
    for changes, (hh, orca, hexphi, refusal) in DEMO_CELLS:
        method = changes.get(METHOD, "seal")
        for seed in range(seeds):
            noise = rng.normal(0, 1.5, 3) if method != "sft" else np.zeros(3)
            metrics: dict[str, Any] = {
                "winrate/hh": 50 + hh + noise[0], "winrate/orca": 50 + orca + noise[1],
                "winrate/hexphi": 50 + hexphi + noise[2],
                "safety/refusal_rate": float(np.clip(0.2 + refusal + rng.normal(0, 0.02), 0, 1)),
                "prov/device": device,
            }
            if method == "seal":
                metrics |= {"selector/auroc_unsafe": float(np.clip(0.7 + refusal + rng.normal(0, 0.02), 0, 1)),
                            "selector/dropped_unsafe_share": float(np.clip(0.3 + refusal, 0, 1))}
            for stage in STAGES:
                if stage == "selector" and method != "seal":
                    continue
                extra = 2.0 if stage == "selector" and changes.get(ALGORITHM) == 1 else 1.0
                metrics[f"mem/{stage}_peak_mb"] = 100.0 * extra + rng.normal(0, 3)
                metrics[f"time/{stage}_s"] = 10.0 * extra + rng.normal(0, 0.5)
            rows.append(result_row(changes, seed=seed, metrics=metrics))
    return frame(rows)


if __name__ == "__main__":
    from analysis.report import write_report

    results = demo_results()
    prompts = demo_prompts(results)
    print(write_report(results, sys.argv[1] if len(sys.argv) > 1 else "synthetic_report", prompts=prompts))
