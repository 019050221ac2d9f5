"""Heavy stages as Ray Train jobs on local Ray (CPU, gloo): the answer does not depend on the worker
count, omega replicas stay bit-identical, and a killed worker resumes from its last checkpoint.

Each worker group costs seconds to start on 2 CPUs (RAY_NOTES.md), so there are few tests and they
share one 2-worker run. The world and base model are computed in-process; only the stages under test
(selector, fine-tune) run as Ray Train jobs: 5 worker groups and 1 restart in all.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from seal_ray.config import load_cell_config
from seal_ray.errors import ConfigError
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import worker_spec
from seal_ray.stages import base, data, finetune, select, selector
from seal_ray.stages.common import MODEL_DIR
from seal_ray.store import StageStore
from conftest import TINY  # tests/ is on sys.path (pytest rootdir conftest, no package)

# One pytest worker runs the whole module (make test: --dist loadgroup): its Ray session and
# module fixtures start once.
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray_train")]

# The global batch is 8 for both trained stages (TINY). 2 workers: 4 rows each, one pass. 1 worker:
# micro-batches of 4, accumulated twice. Same global batch, different reduction order, so the figures
# agree up to float32 rounding. Stated tolerance (absolute, float32): selector logits 1e-5 (they sit
# near 0.1 and move by ~1e-3), fine-tuned weights 1e-5.
MICRO = 4
LOGITS_ATOL = 1e-5
WEIGHTS_ATOL = 1e-5


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def config():
    return load_cell_config(None, [*TINY, f"resources.micro_batch_size={MICRO}"])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, config):
    """The world and the base model, computed in-process (they are not under test here)."""
    store = StageStore(tmp_path_factory.mktemp("store"))
    data_r = store.run("data", data.key(config), lambda d: data.run(config, d), log=_quiet)
    base_r = store.run("base", base.key(config, data_r.hash),
                       lambda d: LocalExecutor().run("base", base.worker, _spec(config, d, data_dir=data_r.dir), d, _quiet),
                       log=_quiet)
    return {"data_dir": data_r.dir, "base_dir": base_r.dir}


@pytest.fixture(scope="module")
def ray_storage(tmp_path_factory):
    return tmp_path_factory.mktemp("ray_train")


@pytest.fixture(scope="module")
def two_workers(ray_session, tmp_path_factory, config, upstream, ray_storage):
    """Selector and fine-tune over 2 Ray Train workers; the fine-tune keeps the top-p of these logits."""
    from seal_ray.ray_train import RayTrainExecutor

    root = tmp_path_factory.mktemp("two_workers")
    executor = RayTrainExecutor(num_workers=2, cpus_per_worker=1.0, max_failures=1, storage_path=ray_storage)
    lines: list[str] = []
    out = _selector(executor, config, upstream, root, lines.append)
    select_dir = root / "select"
    select_dir.mkdir()
    select.run(config, upstream["data_dir"], root / "selector", select_dir, _quiet)
    out.update(_finetune(executor, config, upstream, select_dir, root, lines.append))
    return {**out, "select_dir": select_dir, "lines": lines}


def test_two_workers_match_one_worker_and_omega_replicas_stay_bit_identical(
        two_workers, ray_session, tmp_path, config, upstream, ray_storage):
    from seal_ray.ray_train import RayTrainExecutor

    # Every worker's omega replica after selector training: one digest per rank, all equal, and equal
    # to the logits rank 0 saved.
    digests = two_workers["selector_result"]["omega_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == hashlib.sha256(two_workers["logits"].numpy().tobytes()).hexdigest()
    assert two_workers["selector_result"]["measure"]["workers"] == 2
    assert two_workers["selector_result"]["measure"]["device"] == "cpu"
    assert two_workers["finetune_result"]["measure"]["peak_mb"] > 0
    assert any("[selector] epoch 2/2" in line for line in two_workers["lines"])  # rank 0's log reached the driver

    one = RayTrainExecutor(num_workers=1, cpus_per_worker=1.0, max_failures=0, storage_path=ray_storage)
    ray_1 = _selector(one, config, upstream, tmp_path / "ray1", _quiet)
    ray_1.update(_finetune(one, config, upstream, two_workers["select_dir"], tmp_path / "ray1", _quiet))
    local = _selector(LocalExecutor(), config, upstream, tmp_path / "local", _quiet)
    local.update(_finetune(LocalExecutor(), config, upstream, two_workers["select_dir"], tmp_path / "local", _quiet))

    # The Ray 1-worker stage is the single-process loop itself: bit for bit.
    assert torch.equal(ray_1["logits"], local["logits"])
    for name in local["weights"]:
        assert torch.equal(ray_1["weights"][name], local["weights"][name]), name

    # 2 workers vs 1 worker with accumulation, the same global batch: equal within the stated tolerance.
    assert two_workers["logits"].shape == ray_1["logits"].shape
    assert not torch.equal(two_workers["logits"], selector_init(config, two_workers["logits"]))  # omega did train
    torch.testing.assert_close(two_workers["logits"], ray_1["logits"], rtol=0.0, atol=LOGITS_ATOL)
    assert two_workers["weights"].keys() == ray_1["weights"].keys()
    for name in ray_1["weights"]:
        torch.testing.assert_close(two_workers["weights"][name], ray_1["weights"][name], rtol=0.0, atol=WEIGHTS_ATOL,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.slow  # 90 s on 2 cores; resuming from a stage checkpoint is also tested inline (test_pipeline)
def test_a_killed_worker_resumes_from_its_last_checkpoint_with_the_same_result(
        two_workers, ray_session, tmp_path, monkeypatch, config, upstream, ray_storage):
    from seal_ray.ray_train import RayTrainExecutor

    marker = tmp_path / "fault_fired"
    # Epoch index 1, step 0: a worker process dies (os._exit) after the checkpoint of epoch 1 was written.
    # The executor passes SEAL_RAY_* variables on to the workers (a runtime env of the Train run).
    monkeypatch.setenv("SEAL_RAY_FAULT", "selector@1.0=kill")
    monkeypatch.setenv("SEAL_RAY_FAULT_ONCE", str(marker))
    executor = RayTrainExecutor(num_workers=2, cpus_per_worker=1.0, max_failures=1, storage_path=ray_storage)
    lines: list[str] = []
    resumed = _selector(executor, config, upstream, tmp_path / "killed", lines.append)

    assert marker.exists(), "the fault never fired"
    assert "[selector] resuming from the checkpoint after epoch 1" in lines
    assert resumed["selector_result"]["resumed_from_epoch"] == 1
    # Same data order, optimiser states, RNG and safe-batch position: the uninterrupted run's logits, exactly.
    assert torch.equal(resumed["logits"], two_workers["logits"])
    assert resumed["selector_result"]["omega_sha256"] == two_workers["selector_result"]["omega_sha256"]


def test_a_sweep_of_two_worker_cells_runs_ray_train_inside_tune_without_deadlock(ray_session, tmp_path):
    """RAY_NOTES.md, "Deadlocks on small clusters": the trial (driver) takes 0.01 CPU, its 2 Train
    workers 0.99 CPU each, and concurrency is bounded by what can be placed (here: 1 cell). With a
    whole CPU per worker the cell could never be placed on 2 CPUs: the sweep refuses before it hangs."""
    import yaml

    from seal_ray.sweep import run_sweep
    from seal_ray.sweep_spec import parse_sweep

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml").read_text())
    raw["base"]["resources"] = {"num_workers": 2, "isolate_stages": False}
    # One Standard SFT cell (its own reference): 3 worker groups in all (base, finetune, generate).
    raw.update(baselines=[], ablations={})
    raw["base"]["selection"] = {"method": "sft", "topp": 1.0}
    with pytest.raises(ConfigError, match=r"could never start.*cpus_per_worker <= 0.99"):
        run_sweep(parse_sweep(raw, "two-workers.yaml"), tmp_path / "refused", log=_quiet)

    raw["base"]["resources"]["cpus_per_worker"] = 0.99
    lines: list[str] = []
    frame = run_sweep(parse_sweep(raw, "two-workers.yaml"), tmp_path, log=lines.append)

    assert list(frame["status"]) == ["done"], frame["error"].tolist()
    assert int(frame["prov/workers"].iloc[0]) == 2
    assert any("at most 1 at a time (the cluster can place 1)" in line for line in lines)
    assert frame["winrate/hh"].iloc[0] == 50.0  # Standard SFT judged against itself
    assert frame["mem/finetune_peak_mb"].iloc[0] > 0
    runs = sorted(p.name.split("-")[0] for p in (tmp_path / "ray_train").iterdir() if p.is_dir())
    assert runs == ["base", "finetune", "generate"], runs  # each heavy stage was a Ray Train run


# --- helpers --------------------------------------------------------------------------------------


def _quiet(line: str) -> None:
    pass


def _spec(config, work_dir: Path, **dirs: Path) -> dict:
    return worker_spec(config, work_dir, **dirs)  # what CellPipeline._heavy hands an executor


def _selector(executor, config, upstream, root: Path, log) -> dict:
    work_dir = root / "selector"
    work_dir.mkdir(parents=True)
    result = executor.run("selector", selector.worker, _spec(config, work_dir, **upstream), work_dir, log)
    logits = torch.load(work_dir / selector.SELECTOR_FILE, weights_only=True)
    return {"selector_result": result, "logits": logits}


def _finetune(executor, config, upstream, select_dir: Path, root: Path, log) -> dict:
    from safetensors.torch import load_file

    work_dir = root / "finetune"
    work_dir.mkdir(parents=True)
    spec = _spec(config, work_dir, data_dir=upstream["data_dir"], base_dir=upstream["base_dir"], select_dir=select_dir)
    result = executor.run("finetune", finetune.worker, spec, work_dir, log)
    weights = load_file(str(next((work_dir / MODEL_DIR).glob("*.safetensors"))))
    assert json.loads((select_dir / select.KEPT_FILE).read_text())  # a non-empty selection was trained on
    return {"finetune_result": result, "weights": weights}


def selector_init(config, like: torch.Tensor) -> torch.Tensor:
    from seal_ray.selector import init_logits

    return init_logits(like.numel(), config.selector.activation, config.selector.init)
