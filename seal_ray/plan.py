"""`seal-ray plan`: what a sweep will cost and what it can detect, before anything runs.

- Runs: the sweep's cells x seeds, and which of them earlier results already hold.
- Compute: every stage the runs need, found by walking the cell pipeline with a store that only
  records stage keys (PlanningStore); a stage complete in the cache costs nothing, any other is
  estimated from the median time of that stage kind in the same cache. Shared stages (the data, the
  base model, the Standard SFT reference of a seed) are counted once, as the cache will compute them.
- Power: the noise of each study's differences, from earlier results of the same sweep
  (analysis.power), gives the minimum detectable difference at the planned seeds and, with
  `--detect D`, the seeds needed to detect D points. Without earlier results a pilot is needed for that.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from seal_ray.config import stable_hash
from seal_ray.errors import UserError
from seal_ray.pipeline import CellPipeline
from seal_ray.results import load, load_prompts, resolve
from seal_ray.storage import Storage
from seal_ray.store import MARKER, StageResult, StageStore
from seal_ray.sweep_spec import SweepSpec, load_sweep

Log = Callable[[str], None]


class PlanningStore:
    """A stage store that computes nothing: it records each stage's key hash and whether the real cache
    has it complete, so CellPipeline.run lists exactly the stages a cell would need."""

    def __init__(self, store: StageStore):
        self.store, self.storage, self.root = store, store.storage, store.root
        self.needed: dict[tuple[str, str], bool] = {}

    def run(self, stage: str, key: dict[str, Any], compute: Callable, *, cell: str | None = None,
            log: Log = print) -> StageResult:
        key_hash = stable_hash(key)
        complete = self.needed.setdefault((stage, key_hash), self.store.is_complete(stage, key_hash))
        return StageResult(stage, key_hash, self.store.stage_dir(stage, key_hash), {}, complete)


class PlanningPipeline(CellPipeline):
    def _metrics(self, stages: dict[str, StageResult]) -> dict[str, Any]:
        return {}  # nothing ran: there are no files to read metrics from


def stage_timings(store: StageStore) -> dict[str, float]:
    """Median wall seconds of each stage kind over the complete stages of the cache."""
    timings: dict[str, list[float]] = {}
    for stage in store.storage.list_names("stages"):
        for key_hash in store.storage.list_names(f"stages/{stage}"):
            text = store.storage.read_text(f"stages/{stage}/{key_hash}/{MARKER}")
            seconds = json.loads(text).get("seconds") if text else None
            if isinstance(seconds, (int, float)):
                timings.setdefault(stage, []).append(float(seconds))
    return {stage: statistics.median(values) for stage, values in timings.items()}


@dataclass
class ComputePlan:
    runs: int
    done: int  # runs that earlier results of this sweep already hold (done)
    stages: dict[tuple[str, str], bool] = field(default_factory=dict)  # (stage, hash) -> complete in cache
    timings: dict[str, float] = field(default_factory=dict)

    def to_compute(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (stage, _), complete in self.stages.items():
            if not complete:
                counts[stage] = counts.get(stage, 0) + 1
        return counts

    def seconds(self) -> tuple[float, list[str]]:
        """(estimated seconds of the stages to compute, stage kinds with no earlier timing)."""
        counts = self.to_compute()
        unknown = sorted(stage for stage in counts if stage not in self.timings)
        return sum(n * self.timings[stage] for stage, n in counts.items() if stage in self.timings), unknown


def compute_plan(spec: SweepSpec, storage: str | Path, earlier: pd.DataFrame | None) -> ComputePlan:
    store = StageStore(storage)
    planning = PlanningStore(store)
    done = set()
    if earlier is not None and not earlier.empty:
        done = {(c, int(s)) for c, s, status in zip(earlier["cell_id"], earlier["seed"], earlier["status"])
                if status == "done"}
    runs = spec.runs()
    for cell, seed in runs:
        if (cell.cell_id, seed) not in done:
            PlanningPipeline(cell.with_seed(seed), planning, executor=None, log=lambda line: None).run()
    return ComputePlan(len(runs), sum((c.cell_id, s) in done for c, s in runs), planning.needed, stage_timings(store))


def load_earlier(spec: SweepSpec, source: str | None, storage: str | Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str]:
    """(results, per-prompt outcomes, where they came from) of earlier runs; Nones when there are none."""
    target = source or spec.name
    try:
        folder = resolve(target, storage)
    except UserError:
        if source:
            raise
        return None, None, ""
    frame = load(target, storage)
    # Only the cells of this sweep: a pilot under another name shares their ids (the config hash).
    frame = frame[frame["cell_id"].isin({cell.cell_id for cell in spec.cells})] if not frame.empty else frame
    if frame.empty or not (frame["status"] == "done").any():
        return None, None, folder.uri
    return frame, load_prompts(target, storage), folder.uri


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def power_lines(frame: pd.DataFrame, prompts: pd.DataFrame | None, seeds: int, detect: float | None) -> list[str]:
    from analysis.power import study_noise

    noise, comparisons = study_noise(frame, prompts)
    if not noise:
        return ["Power: the earlier results have no study with 2 seeds paired with its reference; "
                "run a pilot of at least 2 seeds to estimate the noise."]
    lines = [f"Power (80%, two-sided alpha 0.05/{comparisons} for up to {comparisons} comparisons, Holm's strictest "
             f"step), from the spread of per-seed differences in the earlier results:",
             f"  {'study':<14} {'column':<28} {'sd':>8} {'detectable at ' + str(seeds) + ' seeds':>26}"
             + (f" {'seeds for ' + format(detect, 'g') + ' points':>20}" if detect is not None else "")]
    for column in noise:
        detectable = column.detectable(seeds, comparisons)
        shown = "needs >= 3 seeds" if detectable is None else f"{detectable:.3g}" + (" points" if column.unit == "%" else "")
        line = f"  {column.study:<14} {column.header:<28} {column.sd:>8.3g} {shown:>26}"
        if detect is not None:
            needed = column.seeds_for(detect, comparisons) if column.unit == "%" else None
            line += f" {('over 1000' if needed is None else str(needed)) if column.unit == '%' else '-':>20}"
        lines.append(line)
    if detect is not None:
        rates = [c.seeds_for(detect, comparisons) for c in noise if c.unit == "%"]
        if rates and all(n is not None for n in rates):
            lines.append(f"Seeds needed for every rate column to detect {detect:g} points: {max(rates)}.")
        elif rates:
            lines.append(f"Some rate columns cannot detect {detect:g} points with up to 1000 seeds.")
    return lines


def plan_sweep(path: str | Path, *, storage: str | Path = "runs", source: str | None = None,
               detect: float | None = None, seeds: int | None = None, log: Log = print) -> None:
    if detect is not None and detect <= 0:
        raise UserError(f"--detect: {detect} is not a positive difference (points of a rate, e.g. 5)")
    spec = load_sweep(path, seeds=seeds)
    earlier, prompts, origin = load_earlier(spec, source, storage)
    compute = compute_plan(spec, storage, earlier)
    log(f"Sweep '{spec.name}' ({spec.source}): {spec.size()} = {compute.runs} runs"
        + (f", {compute.done} already done in {origin}" if compute.done else "") + ".")
    counts = compute.to_compute()
    seconds, unknown = compute.seconds()
    cached = sum(compute.stages.values())
    log(f"Stages to compute: " + (", ".join(f"{n} {stage}" for stage, n in sorted(counts.items())) or "none")
        + (f" ({cached} more are complete in the cache at {Storage(storage).uri})" if cached else "") + ".")
    if counts and len(unknown) == len(counts):
        log(f"Estimated compute: unknown, this cache holds no earlier timing of {', '.join(unknown)}.")
    elif counts:
        log(f"Estimated compute: about {format_seconds(seconds)} of stage time, one stage after another"
            + (f", plus the stages with no earlier timing in this cache: {', '.join(unknown)}" if unknown else "")
            + "; cells that run at once on the cluster divide it.")
    if earlier is None:
        log("Power: no earlier results of these cells" + (f" in {origin}" if origin else f" under {storage}")
            + ", so the noise is unknown: run a pilot (e.g. this sweep with --seeds 2), then plan again "
              "with --from to size the real run.")
        return
    for line in power_lines(earlier, prompts, len(spec.seeds), detect):
        log(line)
