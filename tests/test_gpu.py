"""The GPU tier (`make test-gpu`): the CUDA path end to end, the moment a GPU machine is available.

Skipped without CUDA (they are collected, so `make test` shows them as skipped). On a GPU machine:
a smoke cell as a Ray Train job on cuda with 1 worker (nccl); bf16 with LoRA for the selector and the
fine-tuning; Algorithm 1 vs 2 peak memory in torch.cuda.max_memory_allocated (Algorithm 2 keeps no
theta_hat, so it must peak lower); and 2 nccl workers when the machine has 2 GPUs.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from seal_ray.config import load_cell_config
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import CellPipeline, worker_spec
from seal_ray.stages import base, data, selector
from seal_ray.store import StageStore
from conftest import TINY  # tests/ is on sys.path (pytest rootdir conftest, no package)
from tiny_hf import make_tiny_llama

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run `make test-gpu` on a GPU machine")]
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def ray_gpu_session():
    import ray

    ray.init(num_cpus=2, num_gpus=GPUS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cuda_cell(tmp_path: Path, workers: int) -> dict:
    from seal_ray.ray_train import RayTrainExecutor

    config = load_cell_config(None, [*TINY, "resources.use_gpu=true", f"resources.num_workers={workers}",
                                     "resources.executor=ray_train", "resources.cpus_per_worker=0.5"])
    executor = RayTrainExecutor.from_config(config.resources, storage_path=tmp_path / "ray_train")
    lines: list[str] = []
    outcome = CellPipeline(config, StageStore(tmp_path / "store"), executor, log=lines.append).run()
    assert any("GPU" in line for line in lines), lines[-10:]
    return outcome.metrics


def test_a_smoke_cell_runs_on_cuda_with_one_nccl_worker(ray_gpu_session, tmp_path):
    assert torch.distributed.is_nccl_available()
    metrics = _cuda_cell(tmp_path, workers=1)
    assert metrics["prov/device"] == "cuda" and metrics["prov/workers"] == 1
    assert metrics["mem/selector_peak_mb"] > 0 and metrics["mem/finetune_peak_mb"] > 0
    assert 0.0 <= metrics["safety/refusal_rate"] <= 1.0


@pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs")
def test_a_smoke_cell_runs_on_two_nccl_workers(ray_gpu_session, tmp_path):
    metrics = _cuda_cell(tmp_path, workers=2)
    assert metrics["prov/device"] == "cuda" and metrics["prov/workers"] == 2


def test_bf16_lora_selector_and_finetuning_on_cuda(tmp_path):
    llama = tmp_path / "llama"
    make_tiny_llama(llama)
    overrides = [o for o in TINY if not o.startswith("model.")] + [
        f"model.name_or_path={llama}", "model.dtype=bfloat16", "model.lora.enabled=true", "model.lora.r=4",
        "model.lora.alpha=8", "selector.algorithm=1", "finetune.lr=1e-3",
    ]
    config = load_cell_config(None, overrides)
    outcome = CellPipeline(config, StageStore(tmp_path / "store"), LocalExecutor("cuda"), log=_quiet).run()
    metrics, stages = outcome.metrics, outcome.stages
    assert metrics["prov/device"] == "cuda"
    logits = torch.load(stages["selector"].dir / "selector.pt", weights_only=True)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all() and not torch.all(logits == logits[0])
    assert (stages["finetune"].dir / "model" / "adapter_config.json").is_file()
    assert all(math.isfinite(loss) for loss in stages["finetune"].meta.get("epoch_losses", [0.0]))
    for name in ("hh", "orca", "hexphi"):
        assert 0.0 <= metrics[f"winrate/{name}"] <= 100.0


def test_algorithm_2_peaks_below_algorithm_1_in_cuda_memory(tmp_path):
    # benchmarks/alg_memory.py on the GPU: the same data and base model, the selector stage under each algorithm.
    configs = {alg: load_cell_config(None, [*TINY, "model.hidden_size=128", "model.num_layers=2", "model.num_heads=4",
                                            f"selector.algorithm={alg}"]) for alg in (1, 2)}
    executor = LocalExecutor("cuda")
    (tmp_path / "data").mkdir()
    data.run(configs[2], tmp_path / "data")
    (tmp_path / "base").mkdir()
    executor.run("base", base.worker, worker_spec(configs[2], tmp_path / "base", data_dir=tmp_path / "data"),
                 tmp_path / "base", _quiet)
    peaks = {}
    for alg in (1, 2):
        work_dir = tmp_path / f"selector-alg{alg}"
        work_dir.mkdir()
        spec = worker_spec(configs[alg], work_dir, data_dir=tmp_path / "data", base_dir=tmp_path / "base")
        measure = executor.run("selector", selector.worker, spec, work_dir, _quiet)["measure"]
        assert measure["device"] == "cuda"
        peaks[alg] = measure["peak_mb"]
    assert 0 < peaks[2] < peaks[1], json.dumps(peaks)
