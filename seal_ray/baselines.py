"""The paper's baselines beside SEAL (SEAL.md, table): DSIR and SafeInstr.

- DSIR (Xie et al. 2023, the `data-selection` package): importance weights log p_target(x) / p_raw(x) from
  hashed n-gram counts, with D_ft as raw data and the safe set as target; keep the top share.
- SafeInstr (Bianchi et al. 2024, "safety-tuned LLaMAs"): fine-tune on D_ft plus a small share of safety
  demonstrations. seal_ray ships none: the user names a file (selection.safety_file).

Pure functions of rows; the select stage (stages/select.py) calls them and writes their files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from seal_ray.selector import top_p_ids


def row_text(row: dict) -> str:
    return f"{row['prompt']}\n{row['response']}"


def dsir_log_weights(raw_rows: Sequence[dict], target_rows: Sequence[dict], work_dir: Path, *, ngrams: int = 2,
                     num_buckets: int = 10000) -> np.ndarray:
    """DSIR's log importance weight of each raw row, in the order given (data_selection.HashedNgramDSIR).

    The package reads jsonl files and writes its weights under a cache dir: both live in a scratch folder
    of `work_dir` that is removed afterwards. One process (num_proc=1) keeps the row order exact."""
    from data_selection import HashedNgramDSIR

    scratch = Path(tempfile.mkdtemp(prefix="dsir_", dir=work_dir))
    try:
        paths = {}
        for name, rows in (("raw", raw_rows), ("target", target_rows)):
            paths[name] = scratch / f"{name}.jsonl"
            paths[name].write_text("".join(json.dumps({"text": row_text(row)}) + "\n" for row in rows))
        dsir = HashedNgramDSIR(
            [str(paths["raw"])], [str(paths["target"])], cache_dir=str(scratch / "cache"), num_proc=1,
            ngrams=ngrams, num_buckets=num_buckets, min_example_length=0,
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        # One raw file on one process = one shard, numbered 0, in file order.
        weights = np.load(scratch / "cache" / "log_importance_weights" / "0.npy")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if weights.shape != (len(raw_rows),):
        raise RuntimeError(f"DSIR returned {weights.shape} weights for {len(raw_rows)} rows")
    return weights


def dsir_keep(raw_rows: Sequence[dict], target_rows: Sequence[dict], topp: float, work_dir: Path, *, ngrams: int = 2,
              num_buckets: int = 10000) -> tuple[list[int], dict[int, float]]:
    """(kept ids: the floor(topp * N) largest importance weights, ties to the smaller id; id -> log weight).

    Deterministic top-k, not DSIR's Gumbel resampling: a baseline cell must not vary with a hidden RNG."""
    weights = dsir_log_weights(raw_rows, target_rows, work_dir, ngrams=ngrams, num_buckets=num_buckets)
    ids = [row["id"] for row in raw_rows]
    kept = top_p_ids(torch.as_tensor(weights, dtype=torch.float64), ids, topp)
    return kept, {i: float(w) for i, w in zip(ids, weights)}


def safety_count(kept_count: int, fraction: float) -> int:
    """Safety rows SafeInstr adds: `fraction` of the kept D_ft rows, at least one."""
    return max(1, round(fraction * kept_count))


def safety_rows(safety: Sequence[dict], count: int, first_id: int) -> list[dict]:
    """The first `count` usable safety demonstrations as training rows with ids from `first_id` on.

    Fresh ids keep them apart from D_ft's (training batches are drawn by id); `source_id` is the
    row's id in the safety file."""
    usable = [row for row in safety if row["prompt"] and row["response"]][:count]
    return [{"id": first_id + n, "prompt": row["prompt"], "response": row["response"], "source_id": row["id"]}
            for n, row in enumerate(usable)]
