"""Running a sweep with Ray Tune: one function trainable (the cell's driver) per cell x seed.

The sweep's own folder (results.py) is the source of truth, not Tune's: before Tune starts, every
cell x seed already done is skipped, so running a sweep again, adding seeds or values, or resuming
after the driver was killed all run exactly the cells that are missing, failed or were in flight.
Their completed stages come from the stage cache; in-flight training stages resume from checkpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from seal_ray.config import CellConfig, cell_from_dict, to_dict
from seal_ray.errors import ConfigError, StageFailed, UserError
from seal_ray.curves import copy_cell_curves
from seal_ray.pipeline import CellPipeline
from seal_ray.preflight import check_cell_inputs
from seal_ray.results import load, read_manifest, read_record, sweep_folder, write_record
from seal_ray.storage import Storage
from seal_ray.store import StageStore
from seal_ray.sweep_spec import SweepSpec, load_sweep, parse_sweep
from seal_ray.tracking import tracking

Log = Callable[[str], None]
LEASE_S = 120.0  # a cloud run lease not refreshed for this long belongs to a dead driver
DRIVER_CPU = 0.01  # RAY_NOTES.md: a driver holding a whole CPU while its Train workers wait deadlocks 2-CPU machines


def entry_key(cell_id: str, seed: int) -> str:
    return f"{cell_id}-s{seed}"


def executor_kind(config: CellConfig) -> str:
    """'inline' runs the stages in the trial itself (one CPU worker: no worker group to start);
    'ray_train' runs each heavy stage as a Ray Train job over resources.num_workers workers."""
    if config.resources.executor != "auto":
        return config.resources.executor
    return "inline" if config.resources.num_workers == 1 and not config.resources.use_gpu else "ray_train"


def make_executor(config: CellConfig, storage: str):
    if executor_kind(config) == "inline":
        from seal_ray.executor import LocalExecutor

        return LocalExecutor("cpu", isolate=config.resources.isolate_stages)
    from seal_ray.ray_train import RayTrainExecutor

    return RayTrainExecutor.from_config(config.resources, storage_path=str(Storage(storage).local_path("ray_train")))


def trial_resources(config: CellConfig) -> dict[str, float]:
    if executor_kind(config) == "inline":
        return {"cpu": config.resources.cpus_per_worker}
    return {"cpu": DRIVER_CPU}


def cell_footprint(config: CellConfig) -> dict[str, float]:
    """What one running cell occupies on the cluster, to bound concurrency by what can be placed."""
    workers = config.resources.num_workers if executor_kind(config) == "ray_train" else 1
    need = {"CPU": workers * config.resources.cpus_per_worker + (DRIVER_CPU if executor_kind(config) == "ray_train" else 0)}
    if config.resources.use_gpu:
        need["GPU"] = float(workers)
    return need


# --- the trial ----------------------------------------------------------------------------------


def run_cell_trial(trial_config: dict, *, storage: str, folder: str, table: dict[str, dict]) -> None:
    """The Tune function trainable: run one cell x seed, record it, report its metrics."""
    from ray import tune

    key = trial_config.get("entry")
    if key is None:  # an Optuna trial: sampled keys over the base cell
        entry = _optuna_entry(trial_config, table, Storage(folder))
    else:
        entry = table[key]
    metrics = run_cell_entry(entry, storage, Storage(folder))
    # Report once and return nothing: a returned dict would reach Tune as a second result.
    tune.report({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})


def run_cell_entry(entry: dict, storage: str, folder: Storage) -> dict[str, Any]:
    config = cell_from_dict({**entry["config"], "seed": entry["seed"]})
    cell_id, seed = entry["cell_id"], entry["seed"]
    log_rel = f"logs/{entry_key(cell_id, seed)}.log"
    log_path = folder.local_path(log_rel)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_record(folder, cell_id, seed, status="running", started=started, error="", host=os.uname().nodename,
                 pid=os.getpid(), node_id=_ray_node_id())
    failure = None
    with open(log_path, "a") as log_file:
        def log(line: str) -> None:
            log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            log_file.flush()

        try:
            outcome = CellPipeline(config, StageStore(storage), make_executor(config, storage), log=log,
                                   cell=entry_key(cell_id, seed)).run()
        except StageFailed as err:
            failure = str(err)
        except Exception as err:  # noqa: BLE001 - any cell error is recorded, the sweep goes on
            failure = f"{type(err).__name__}: {err}"
        if failure:
            log(f"cell failed: {failure}")
    if not folder.is_local:
        folder.upload_file(log_path, log_rel)
    if failure:
        write_record(folder, cell_id, seed, status="failed", error=failure, finished=time.time(), seconds=time.time() - started)
        return {"cell/ok": 0, "cell/all_stages_cached": False}
    copy_cell_curves(folder, cell_id, seed, {name: result.dir for name, result in outcome.stages.items()})
    cached = all(result.cached for result in outcome.stages.values())
    write_record(folder, cell_id, seed, status="done", metrics=outcome.metrics, finished=time.time(),
                 seconds=time.time() - started, cached=cached, stages=outcome.stage_seconds())
    return {**outcome.metrics, "cell/all_stages_cached": cached, "cell/ok": 1}


def _ray_node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _optuna_entry(trial_config: dict, table: dict[str, dict], folder: Storage) -> dict:
    from seal_ray.config import set_dotted
    from seal_ray.sweep_spec import cell_id_of

    base = table["__optuna_base__"]
    tree = {**base["config"]}
    for dotted, value in trial_config.items():
        set_dotted(tree, dotted, value)
    config = cell_from_dict(tree)
    cell_id = cell_id_of(config)
    label = ", ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in trial_config.items())
    _add_to_manifest(folder, {cell_id: {"label": label, "studies": ["optuna"], "config": to_dict(config)}}, [(cell_id, base["seed"])])
    return {"cell_id": cell_id, "seed": base["seed"], "config": to_dict(config)}


# --- the sweep ----------------------------------------------------------------------------------


@contextlib.contextmanager
def sweep_lock(folder: Storage | Path) -> Iterator[None]:
    """One `sweep run` per sweep name at a time. On a folder, an flock that dies with its process
    (kill -9 included); on a cloud URI, a lease object refreshed while the sweep runs."""
    folder = folder if isinstance(folder, Storage) else Storage(folder)
    name = Path(folder.uri).name
    if not folder.is_local:
        with _lease(folder, name):
            yield
        return
    directory = folder.local_root
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "run.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"sweep '{name}' is already running ({holder}); wait for it, or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _lease(folder: Storage, name: str) -> Iterator[None]:
    import threading

    held = folder.read_text("run.lease")
    if held and time.time() - json.loads(held)["time"] < LEASE_S:
        raise UserError(f"sweep '{name}' is already running ({json.loads(held)['owner']}); wait for it, or stop it first")
    owner = f"pid {os.getpid()} on {os.uname().nodename}"
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(LEASE_S / 4):
            folder.write_text("run.lease", json.dumps({"owner": owner, "time": time.time()}))

    folder.write_text("run.lease", json.dumps({"owner": owner, "time": time.time()}))
    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        folder.delete("run.lease")


def _add_to_manifest(folder: Storage, cells: dict[str, dict], entries: list[tuple[str, int]]) -> None:
    manifest = read_manifest(folder)
    manifest["name"] = Path(folder.uri).name
    for cell_id, cell in cells.items():
        known = manifest["cells"].setdefault(cell_id, cell)
        known["studies"] = sorted(set(known.get("studies", [])) | set(cell.get("studies", [])))
    seen = {(e["cell_id"], e["seed"]) for e in manifest["entries"]}
    for cell_id, seed in entries:
        if (cell_id, seed) not in seen:
            manifest["entries"].append({"cell_id": cell_id, "seed": seed})
            seen.add((cell_id, seed))
    folder.write_text("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))


def plan(spec: SweepSpec, folder: Storage) -> tuple[dict[str, dict], list[str]]:
    """(table of every entry of this spec, keys still to run), after recording them in the manifest."""
    cells = {c.cell_id: {"label": c.label, "studies": c.studies, "config": to_dict(c.config)} for c in spec.cells}
    pairs = [(c.cell_id, seed) for c in spec.cells for seed in spec.seeds]
    _add_to_manifest(folder, cells, pairs)
    table = {entry_key(cid, seed): {"cell_id": cid, "seed": seed, "config": cells[cid]["config"]} for cid, seed in pairs}
    pending = [key for key, e in table.items() if (read_record(folder, e["cell_id"], e["seed"]) or {}).get("status") != "done"]
    return table, pending


def run_sweep(spec: SweepSpec, storage: str | Path, *, address: str | None = None, max_concurrent: int | None = None,
              log: Log = print, tracking_uri: str | None = None):
    """Run what is missing of `spec`; returns the results DataFrame. `tracking_uri` (else the sweep
    file's tracking_uri) logs the sweep to MLflow as it runs (tracking.py)."""
    storage = Storage(storage).uri
    for cell in spec.cells:  # before anything is written
        check_cell_inputs(cell.config, f"{spec.source}: cell {cell.label}")
    folder = sweep_folder(storage, spec.name)
    with sweep_lock(folder):
        folder.write_text("sweep.yaml", yaml.safe_dump(spec.raw, sort_keys=False))
        table, pending = plan(spec, folder)
        with tracking(tracking_uri or spec.tracking_uri, folder, log):
            _execute(spec, storage, folder, table, pending, address, max_concurrent, log)
    return load(folder.uri)


def resume_sweep(name: str, storage: str | Path, *, address: str | None = None, max_concurrent: int | None = None,
                 log: Log = print, tracking_uri: str | None = None):
    """Finish every cell x seed the sweep's manifest holds that is not done (after a crash, a kill -9, ...)."""
    storage = Storage(storage).uri
    folder = sweep_folder(storage, name)
    if not folder.exists("manifest.json"):
        raise UserError(f"no sweep named '{name}' under {storage}/sweeps to resume")
    with sweep_lock(folder):
        spec = parse_sweep(yaml.safe_load(folder.read_text("sweep.yaml")), f"{folder.uri}/sweep.yaml", name=name)
        spec.search = None  # a resumed Optuna sweep finishes its recorded trials; it does not sample new ones
        manifest = read_manifest(folder)
        table = {entry_key(e["cell_id"], e["seed"]): {"cell_id": e["cell_id"], "seed": e["seed"],
                                                      "config": manifest["cells"][e["cell_id"]]["config"]}
                 for e in manifest["entries"]}
        pending = [k for k, e in table.items() if (read_record(folder, e["cell_id"], e["seed"]) or {}).get("status") != "done"]
        with tracking(tracking_uri or spec.tracking_uri, folder, log):
            _execute(spec, storage, folder, table, pending, address, max_concurrent, log)
    return load(folder.uri)


def _execute(spec, storage: str, folder: Storage, table, pending, address, max_concurrent, log: Log) -> None:
    total = len(table)
    if spec.search is None and not pending:
        log(f"sweep '{spec.name}': all {total} cells x seeds are done; nothing to run, no training "
            f"(every stage is cached; results in {folder.uri})")
        return
    # Inputs from outside the configs (dataset files, API key variables) are checked before any work.
    for key in pending:
        check_cell_inputs(cell_from_dict(table[key]["config"]), f"{spec.name}: cell {table[key]['cell_id']}")
    log(f"sweep '{spec.name}': {total - len(pending)} of {total} cells x seeds done, running {len(pending)}; storage {storage}")
    _run_tune(spec, storage, folder, table, pending, address, max_concurrent, log)


def _run_tune(spec, storage: str, folder: Storage, table, pending, address, max_concurrent, log: Log) -> None:
    import ray
    from ray import tune

    from seal_ray.progress import SweepProgress

    example = cell_from_dict(table[pending[0]]["config"]) if pending else spec.cells[0].config
    started_ray = False
    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith(("SEAL_RAY_", "AWS_"))}
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                 include_dashboard=False if address is None else None)
        started_ray = True
    try:
        footprint, resources = cell_footprint(example), ray.cluster_resources()
        placeable = _check_placeable(_placeable(resources, footprint), footprint, resources, address, log)
        if spec.search is not None:
            param_space, tune_config, count = _optuna_setup(spec, table)
            concurrency = 1  # sequential Optuna: the same seed gives the same trials
        else:
            param_space = {"entry": tune.grid_search(pending)}
            concurrency = max(1, min(max_concurrent or placeable, placeable, len(pending)))
            tune_config = tune.TuneConfig(max_concurrent_trials=concurrency)
            count = len(pending)
        trainable = tune.with_parameters(run_cell_trial, storage=storage, folder=folder.uri, table=table)
        trainable = tune.with_resources(trainable, trial_resources(example))
        log(f"running {count} trials, at most {concurrency} at a time (the cluster can place {placeable})")
        # Tune's own experiment state stays on the driver's disk: the sweep's folder is the source of truth.
        tuner = tune.Tuner(
            trainable, param_space=param_space, tune_config=tune_config,
            run_config=tune.RunConfig(name=f"tune-{int(time.time())}", storage_path=str(folder.local_path("tune")),
                                      callbacks=[SweepProgress(count, concurrency, log)], verbose=0),
        )
        tuner.fit()
    finally:
        if started_ray:
            ray.shutdown()


def _placeable(resources: dict[str, float], need: dict[str, float]) -> int:
    """How many cells of footprint `need` the cluster's total `resources` hold at once (0: none)."""
    fits = [math.floor((resources.get(name, 0.0) + 1e-9) / amount) for name, amount in need.items() if amount > 0]
    return min(fits) if fits else 1


def _check_placeable(placeable: int, need: dict[str, float], resources: dict[str, float], address: str | None, log: Log) -> int:
    """A cell the cluster can never place would wait forever (RAY_NOTES.md, "Deadlocks on small clusters").

    On a fixed cluster (local Ray) that is a config error; on a cluster given by --address the
    autoscaler may still add nodes, so the sweep warns and runs one cell at a time.
    """
    if placeable > 0:
        return placeable
    have = ", ".join(f"{name} {resources.get(name, 0.0):g}" for name in need)
    wants = ", ".join(f"{name} {amount:g}" for name, amount in need.items())
    advice = ("lower resources.num_workers or resources.cpus_per_worker (the cell's driver takes "
              f"{DRIVER_CPU} CPU beside its workers, so on a 2-CPU machine 2 workers need cpus_per_worker <= 0.99)")
    if address is None:
        raise ConfigError(f"a cell needs {wants} at once but this Ray cluster has {have}: it could never start; {advice}",
                          field="resources.num_workers")
    log(f"warning: a cell needs {wants} at once but the cluster has {have} now; waiting for the autoscaler to add "
        f"nodes (else {advice})")
    return 1


def _optuna_setup(spec: SweepSpec, table: dict):
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    search = spec.search
    reference = spec.cells[0]
    table["__optuna_base__"] = {"config": to_dict(reference.config), "seed": spec.seeds[0]}
    space = {}
    for dotted, dist in search.space.items():
        if dist["type"] == "uniform":
            space[dotted] = tune.uniform(dist["low"], dist["high"])
        elif dist["type"] == "loguniform":
            space[dotted] = tune.loguniform(dist["low"], dist["high"])
        else:
            space[dotted] = tune.randint(int(dist["low"]), int(dist["high"]) + 1)
    searcher = OptunaSearch(metric=search.metric, mode=search.mode, sampler=TPESampler(seed=search.seed))
    tune_config = tune.TuneConfig(search_alg=searcher, num_samples=search.samples, max_concurrent_trials=1)
    return space, tune_config, search.samples


def load_spec(path: str, name: str | None, seeds: int | None) -> SweepSpec:
    return load_sweep(path, name=name, seeds=seeds)


def stdout_log(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
