"""One cell of the study: data -> base -> selector -> select -> fine-tune -> generate -> judge.

Every stage goes through the stage cache, so the Standard SFT reference (select, fine-tune, generate)
that each cell is judged against is computed once and shared. Heavy stages run on an executor: here
in-process, or as Ray Train jobs (ray_train.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from seal_ray.config import CellConfig, SelectionConfig, config_hash, to_dict
from seal_ray.metrics import selector_quality
from seal_ray.provenance import provenance
from seal_ray.stages import base, data, finetune, generate, judge, select, selector
from seal_ray.stages.common import load_world
from seal_ray.store import StageResult, StageStore

HEAVY_STAGES = ("base", "selector", "finetune", "generate")


@dataclass
class CellOutcome:
    metrics: dict[str, Any]
    stages: dict[str, StageResult] = field(default_factory=dict)
    # Every stage the cell needed, the shared Standard SFT reference chain included (cache accounting).
    used: list[StageResult] = field(default_factory=list)

    def stage_seconds(self) -> dict[str, float]:
        """stage/hash -> its own compute seconds (as measured when it was computed)."""
        return {f"{r.stage}/{r.hash}": float(r.meta.get("measure", {}).get("seconds", r.meta.get("seconds", 0.0)))
                for r in self.used}


def baseline_config(config: CellConfig) -> CellConfig:
    """The Standard SFT cell every cell is judged against (same seed, same data, same training)."""
    return dataclasses.replace(config, selection=SelectionConfig(method="sft", topp=1.0))


def worker_spec(config: CellConfig, work_dir: Path, **dirs: Path) -> dict:
    """What a heavy stage's worker function receives: plain data, picklable and JSON-able."""
    return {"config": to_dict(config), "work_dir": str(work_dir), "torch_threads": config.resources.torch_threads,
            **{name: str(path) for name, path in dirs.items()}}


class CellPipeline:
    def __init__(self, config: CellConfig, store: StageStore, executor, *, log: Callable[[str], None] = print, cell: str | None = None):
        self.config, self.store, self.executor, self.log = config, store, executor, log
        self.cell = cell or config_hash(config)

    def _light(self, stage: str, key: dict, compute: Callable[[Path], dict]) -> StageResult:
        return self.store.run(stage, key, compute, cell=self.cell, log=self.log)

    def _heavy(self, stage: str, key: dict, worker, config: CellConfig, **dirs: Path) -> StageResult:
        def compute(work_dir: Path) -> dict:
            spec = worker_spec(config, work_dir, **dirs)
            if not self.store.storage.is_local:
                spec["storage_uri"] = self.store.storage.uri
                spec["checkpoint_uri"] = f"{self.store.storage.uri}/{work_dir.relative_to(self.store.root).as_posix()}/checkpoints"
            return self.executor.run(stage, worker, spec, work_dir, self.log)

        return self.store.run(stage, key, compute, cell=self.cell, log=self.log)

    def _model_chain(self, config: CellConfig, data_r: StageResult, base_r: StageResult, selector_r: StageResult | None):
        select_r = self._light(
            "select", select.key(config, data_r.hash, selector_r.hash if selector_r else None),
            lambda d: select.run(config, data_r.dir, selector_r.dir if selector_r else None, d, self.log),
        )
        finetune_r = self._heavy("finetune", finetune.key(config, base_r.hash, select_r.hash), finetune.worker, config,
                                 data_dir=data_r.dir, base_dir=base_r.dir, select_dir=select_r.dir)
        generate_r = self._heavy("generate", generate.key(config, finetune_r.hash, data_r.hash), generate.worker, config,
                                 data_dir=data_r.dir, model_dir=finetune_r.dir)
        return select_r, finetune_r, generate_r

    def run(self) -> CellOutcome:
        config = self.config
        data_r = self._light("data", data.key(config), lambda d: data.run(config, d))
        base_r = self._heavy("base", base.key(config, data_r.hash), base.worker, config, data_dir=data_r.dir)
        selector_r = None
        if select.needs_selector(config):
            selector_r = self._heavy("selector", selector.key(config, data_r.hash, base_r.hash), selector.worker, config,
                                     data_dir=data_r.dir, base_dir=base_r.dir)
        select_r, finetune_r, generate_r = self._model_chain(config, data_r, base_r, selector_r)
        reference = baseline_config(config)
        baseline_chain = self._model_chain(reference, data_r, base_r, None)
        baseline_generate_r = baseline_chain[2]
        judge_r = self._light(
            "judge", judge.key(config, generate_r.hash, baseline_generate_r.hash),
            lambda d: judge.run(config, data_r.dir, generate_r.dir, baseline_generate_r.dir, d),
        )
        stages = {"data": data_r, "base": base_r, "select": select_r, "finetune": finetune_r, "generate": generate_r, "judge": judge_r}
        if selector_r is not None:
            stages["selector"] = selector_r
        used = [*stages.values(), *baseline_chain]
        return CellOutcome(self._metrics(stages), stages, used)

    def base_generations(self) -> tuple[StageResult, StageResult]:
        """(data, generate) of the base model itself: the calibration's first reference point."""
        config = self.config
        data_r = self._light("data", data.key(config), lambda d: data.run(config, d))
        base_r = self._heavy("base", base.key(config, data_r.hash), base.worker, config, data_dir=data_r.dir)
        generate_r = self._heavy("generate", generate.key(config, base_r.hash, data_r.hash), generate.worker, config,
                                 data_dir=data_r.dir, model_dir=base_r.dir)
        return data_r, generate_r

    def _metrics(self, stages: dict[str, StageResult]) -> dict[str, Any]:
        config = self.config
        metrics: dict[str, Any] = dict(stages["judge"].meta["metrics"])
        ft_rows = load_world(stages["data"].dir)["ft"]
        labels_path = stages["data"].dir / data.LABELS_FILE
        kept = json.loads((stages["select"].dir / select.KEPT_FILE).read_text())
        logits = None
        if "selector" in stages:
            logits = torch.load(stages["selector"].dir / selector.SELECTOR_FILE, weights_only=True)
        if labels_path.exists():  # only the mini world knows which rows are unsafe
            labels = {row["id"]: row.get("label", "clean") for row in ft_rows}
            metrics.update(selector_quality(logits, labels, kept))
        if "selector" in stages:
            metrics["artifact/selector_path"] = str(stages["selector"].dir / selector.SELECTOR_FILE)
            if labels_path.exists():
                metrics["artifact/labels_path"] = str(labels_path)
        device, workers = "cpu", config.resources.num_workers
        for name in HEAVY_STAGES:
            if name not in stages:
                continue
            measure = stages[name].meta["measure"]
            metrics[f"mem/{name}_peak_mb"] = measure["peak_mb"]
            metrics[f"time/{name}_s"] = measure["seconds"]
            metrics[f"throughput/{name}_tokens_per_s"] = measure["tokens_per_s"]
            metrics[f"stage/{name}_cached"] = stages[name].cached
            device, workers = measure["device"], measure["workers"]
        metrics.update(provenance(config_hash(config), config.seed, device, workers))
        return metrics

    def artifacts(self, outcome: CellOutcome) -> dict[str, Path]:
        paths = {"kept_ids": outcome.stages["select"].dir / select.KEPT_FILE,
                 "generations": outcome.stages["generate"].dir / generate.GENERATIONS_FILE}
        if "selector" in outcome.stages:
            paths["selector"] = outcome.stages["selector"].dir / selector.SELECTOR_FILE
        return paths
