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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from seal_ray.background import repeating
from seal_ray.cluster_probe import StorageWatch, check_storage_token, needs_probe, refuse_unshared_storage, write_storage_token
from seal_ray.config import CellConfig, cell_from_dict, flatten, to_dict
from seal_ray.errors import ConfigError, StageFailed, UserError
from seal_ray.curves import copy_cell_curves
from seal_ray.kernels import kernel_env
from seal_ray.pipeline import CellPipeline
from seal_ray.preflight import check_cell_inputs
from seal_ray.provenance import launch_env
from seal_ray.results import RETIRED, load, read_manifest, read_record, sweep_folder, write_record
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

        # The trial's process runs cell after cell (Tune reuses actors): one stage server for all of them.
        return LocalExecutor("cpu", isolate=config.resources.isolate_stages, shared_server=True)
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


def run_cell_trial(trial_config: dict, *, storage: str, folder: str, table: dict[str, dict], run_id: str = "",
                   storage_token: str | None = None) -> None:
    """The Tune function trainable: run one cell x seed, record it, report its metrics.

    Tune starts it again when its process or node was lost (RunConfig's FailureConfig); the cell
    then resumes from its completed stages and the in-flight stage's checkpoint, until the cell's
    own resources.max_failures lost attempts in this run (`run_id`) are spent."""
    from ray import tune

    check_storage_token(Storage(folder), storage_token)  # a node with another folder at this path writes nothing
    if "entry" in trial_config:
        entry = table[trial_config["entry"]]
    else:  # an Optuna trial: sampled keys over the base cell, added to the manifest
        entry = _optuna_entry(trial_config, table, Storage(folder))
    lost = [i for i in (read_record(Storage(folder), entry["cell_id"], entry["seed"]) or {}).get("interruptions", [])
            if i.get("run") == run_id]
    budget = cell_from_dict(entry["config"]).resources.max_failures
    if len(lost) > budget:
        record_interrupted(Storage(folder), entry["cell_id"], entry["seed"], lost, budget)
        metrics: dict[str, Any] = {"cell/ok": 0, "cell/interrupted": 1}
    else:
        metrics = run_cell_entry(entry, storage, Storage(folder))
    # Report once and return nothing: a returned dict would reach Tune as a second result.
    tune.report({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})


def record_interrupted(folder: Storage, cell_id: str, seed: int, lost: list[dict], budget: int) -> None:
    """The record of a cell x seed whose trial was lost more often than resources.max_failures allows."""
    reasons = ", ".join(i["reason"] for i in lost) or "its trial ended without recording a result"
    write_record(folder, cell_id, seed, status="interrupted", finished=time.time(),
                 error=f"interrupted: lost {len(lost)} times ({reasons}); resources.max_failures = {budget}; "
                       "`seal-ray sweep resume` finishes it from its completed stages")


def run_cell_entry(entry: dict, storage: str, folder: Storage) -> dict[str, Any]:
    config = cell_from_dict({**entry["config"], "seed": entry["seed"]})
    cell_id, seed = entry["cell_id"], entry["seed"]
    log_rel = f"logs/{entry_key(cell_id, seed)}.log"
    log_path = folder.local_path(log_rel)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    attempts = (read_record(folder, cell_id, seed) or {}).get("attempts", 0) + 1
    write_record(folder, cell_id, seed, status="running", started=started, error="", host=os.uname().nodename,
                 pid=os.getpid(), node_id=_ray_node_id(), attempts=attempts)
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


def trial_entry(trial_config: dict, table: dict[str, dict]) -> dict:
    """The cell x seed a Tune trial runs: a table entry, or an Optuna sample over the base cell."""
    from seal_ray.config import set_dotted
    from seal_ray.sweep_spec import cell_id_of

    if "entry" in trial_config:
        return table[trial_config["entry"]]
    base = table["__optuna_base__"]
    tree = {**base["config"]}
    for dotted, value in trial_config.items():
        set_dotted(tree, dotted, value)
    config = cell_from_dict(tree)
    return {"cell_id": cell_id_of(config), "seed": base["seed"], "config": to_dict(config)}


def _optuna_entry(trial_config: dict, table: dict[str, dict], folder: Storage) -> dict:
    entry = trial_entry(trial_config, table)
    label = ", ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in trial_config.items())
    _add_to_manifest(folder, {entry["cell_id"]: {"label": label, "studies": ["optuna"], "config": entry["config"]}},
                     [(entry["cell_id"], entry["seed"])])
    return entry


# --- the sweep ----------------------------------------------------------------------------------


def _already_running(name: str, holder: str) -> UserError:
    return UserError(f"sweep '{name}' is already running ({holder}); wait for it, or stop it first")


def _lease_holder(folder: Storage) -> str | None:
    """Who holds a cloud sweep's lease, when someone refreshed it lately."""
    held = folder.read_text("run.lease")
    if held and time.time() - json.loads(held)["time"] < LEASE_S:
        return json.loads(held)["owner"]
    return None


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
            raise _already_running(name, handle.read().strip() or "another process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _refuse_if_running(folder: Storage) -> None:
    """sweep_lock's refusal, checked without taking the lock (taking it writes run.lock)."""
    name = Path(folder.uri).name
    if not folder.is_local:
        holder = _lease_holder(folder)
        if holder:
            raise _already_running(name, holder)
        return
    path = folder.local_path("run.lock")
    if not path.is_file():
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _already_running(name, handle.read().strip() or "another process") from None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _lease(folder: Storage, name: str) -> Iterator[None]:
    holder = _lease_holder(folder)
    if holder:
        raise _already_running(name, holder)
    owner = f"pid {os.getpid()} on {os.uname().nodename}"

    def refresh() -> None:
        folder.write_text("run.lease", json.dumps({"owner": owner, "time": time.time()}))

    refresh()
    try:
        # Joined on leaving, so no refresh in progress writes the lease again after it is deleted.
        with repeating(LEASE_S / 4, refresh, name="seal-ray-run-lease"):
            yield
    finally:
        folder.delete("run.lease")


def _write_manifest(folder: Storage, manifest: dict) -> None:
    folder.write_text("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))


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
    _write_manifest(folder, manifest)


# --- what the sweep file asks for now -----------------------------------------------------------


@dataclass
class SweepPlan:
    """What running a sweep will do, worked out from its file and its folder before anything is written."""

    manifest: dict[str, Any]  # the manifest as it is to be written
    table: dict[str, dict]  # entry key -> {cell_id, seed, config}: the cells x seeds to run if not done
    pending: list[str]  # keys of `table` not done yet
    retired: int = 0  # cells x seeds of an earlier version of the file that it no longer asks for
    added: int = 0  # cells x seeds new to the manifest (or asked for again after being retired)
    reference_change: str = ""  # how the base cell changed, when it did

    def pending_configs(self) -> dict[str, CellConfig]:
        """One config per distinct cell still to run, by cell id (for the checks before running)."""
        return {self.table[k]["cell_id"]: cell_from_dict(self.table[k]["config"]) for k in self.pending}


def follow_sweep_file(manifest: dict[str, Any], spec: SweepSpec, today: str) -> SweepPlan:
    """The manifest of `spec` laid over an earlier one (pure: nothing read or written).

    Cells x seeds the file no longer asks for (an edited value, a removed seed) are marked
    `status: retired` with the date: kept with their records, left out of the tables and the exit
    code, never "missing". Asking for one again makes it active again, its record intact.
    """
    cells = {c.cell_id: {"label": c.label, "studies": sorted(c.studies), "config": to_dict(c.config)} for c in spec.cells}
    asked = [(c.cell_id, seed) for c, seed in spec.runs()]
    known = {cid: dict(cell) for cid, cell in manifest.get("cells", {}).items()}
    for cell_id, cell in cells.items():  # labels and studies follow the file; Optuna's trials stay theirs
        optuna = {"optuna"} & set(known.get(cell_id, {}).get("studies", []))
        known[cell_id] = {**cell, "studies": sorted(set(cell["studies"]) | optuna)}
    asked_set = set(asked)
    entries, retired, added = [], 0, 0
    for entry in manifest.get("entries", []):
        pair = (entry["cell_id"], entry["seed"])
        sampled = spec.search is not None and "optuna" in known[entry["cell_id"]].get("studies", [])
        if pair in asked_set or sampled:
            added += int(entry.get("status") == RETIRED)
            entries.append({"cell_id": pair[0], "seed": pair[1]})
        elif entry.get("status") == RETIRED:
            entries.append(entry)
        else:
            retired += 1
            entries.append({"cell_id": pair[0], "seed": pair[1], "status": RETIRED, "retired": today})
    present = {(e["cell_id"], e["seed"]) for e in entries}
    for pair in asked:
        if pair not in present:
            added += 1
            entries.append({"cell_id": pair[0], "seed": pair[1]})
    reference = spec.cells[0].cell_id  # parse_sweep adds the base cell first
    earlier = manifest.get("reference") or _legacy_reference(manifest, reference)
    change = _config_change(known[earlier]["config"], cells[reference]["config"]) if earlier and earlier != reference else ""
    new_manifest = {"name": manifest.get("name") or spec.name, "reference": reference, "cells": known, "entries": entries}
    table = {entry_key(cid, seed): {"cell_id": cid, "seed": seed, "config": cells[cid]["config"]} for cid, seed in asked}
    return SweepPlan(new_manifest, table, [], retired, added, change)


def _legacy_reference(manifest: dict[str, Any], reference: str) -> str | None:
    """The base cell of a manifest written before it named one: a cell whose studies say 'reference'."""
    earlier = [cid for cid, cell in manifest.get("cells", {}).items() if "reference" in cell.get("studies", [])]
    return None if not earlier or reference in earlier else earlier[0]


def _config_change(before: dict, after: dict, shown: int = 4) -> str:
    """'selector.lr 0.001 -> 0.002, ...': the leaves that differ between two cell configs."""
    old, new = flatten(before), flatten(after)
    changed = [f"{key} {old.get(key)} -> {new.get(key)}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    more = f", and {len(changed) - shown} more" if len(changed) > shown else ""
    return ", ".join(changed[:shown]) + more


def _not_done(folder: Storage, table: dict[str, dict]) -> list[str]:
    return [key for key, e in table.items() if (read_record(folder, e["cell_id"], e["seed"]) or {}).get("status") != "done"]


def plan(spec: SweepSpec, folder: Storage) -> SweepPlan:
    """The plan of `spec` over what its folder holds (read only)."""
    sweep_plan = follow_sweep_file(read_manifest(folder), spec, time.strftime("%Y-%m-%d %H:%M"))
    sweep_plan.manifest["name"] = Path(folder.uri).name
    sweep_plan.pending = _not_done(folder, sweep_plan.table)
    return sweep_plan


def _announce(spec: SweepSpec, sweep_plan: SweepPlan, log: Log) -> None:
    if sweep_plan.reference_change:
        log(f"sweep '{spec.name}': its reference (the base cell) changed: {sweep_plan.reference_change}; results of the "
            "earlier reference no longer pair with the new cells (they are retired, not compared)")
    if sweep_plan.retired or (sweep_plan.added and len(sweep_plan.table) != sweep_plan.added):
        log(f"sweep '{spec.name}' follows its edited file: retired {sweep_plan.retired} cells x seeds it no longer asks for "
            f"(kept on disk; seal_ray.results.load(..., include_retired=True) lists them), added {sweep_plan.added}")


class _RayCluster:
    """Ray for one sweep: started on first need (a sweep with nothing to run never starts it),
    stopped at the end when this sweep started it."""

    def __init__(self, address: str | None):
        self.address, self.started = address, False

    def resources(self) -> dict[str, float]:
        import ray

        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith(("SEAL_RAY_", "AWS_"))}
            env.update(launch_env())  # the commit reaches trials that run from a copy without .git
            env.update(kernel_env())  # every node's trials train the same draw (kernels.py)
            ray.init(address=self.address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
                     include_dashboard=False if self.address is None else None)
            self.started = True
        return ray.cluster_resources()

    def __enter__(self) -> "_RayCluster":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _refuse_before_writing(configs: dict[str, CellConfig], source: str, storage: Storage, folder: Storage,
                           cluster: _RayCluster, log: Log) -> int:
    """Every check that can refuse a sweep, in one place, before anything is written to its folder,
    so that a refused run leaves the storage as it found it. (The sweep file itself was validated
    when it was read.) Returns how many cells of `configs` the cluster can place at once (0 when
    there is nothing to run: Ray is then not started at all)."""
    _refuse_if_running(folder)
    for cell_id, config in configs.items():  # inputs from outside the configs: dataset files, API key variables
        check_cell_inputs(config, f"{source}: cell {cell_id}")
    created_root = storage.is_local and not storage.local_root.exists()
    storage.check_writable()
    if not configs:
        return 0
    try:
        resources = cluster.resources()  # Ray is up from here on
        refuse_unshared_storage(storage.uri, cluster.address, log)  # cluster_probe.py: every node sees the storage
        footprints = {json.dumps(cell_footprint(c), sort_keys=True): cell_footprint(c) for c in configs.values()}
        # Checks that need the cluster (what every node sees, ...) belong here, after Ray started.
        return min(_check_placeable(_placeable(resources, need), need, resources, cluster.address, log)
                   for need in footprints.values())
    except UserError:
        if created_root:  # the storage probe made the root; a refused run leaves none
            with contextlib.suppress(OSError):
                storage.local_root.rmdir()
        raise


def run_sweep(spec: SweepSpec, storage: str | Path, *, address: str | None = None, max_concurrent: int | None = None,
              log: Log = print, tracking_uri: str | None = None):
    """Run what is missing of `spec`; returns the results DataFrame. `tracking_uri` (else the sweep
    file's tracking_uri) logs the sweep to MLflow as it runs (tracking.py)."""
    root = Storage(storage)
    folder = sweep_folder(root.uri, spec.name)
    sweep_plan = plan(spec, folder)
    configs = sweep_plan.pending_configs()
    if spec.search is not None:
        configs.setdefault(spec.cells[0].cell_id, spec.cells[0].config)
    with _RayCluster(address) as cluster:
        placeable = _refuse_before_writing(configs, spec.source, root, folder, cluster, log)
        with sweep_lock(folder):
            sweep_plan = plan(spec, folder)  # again under the lock: a run that just ended may have finished cells
            _announce(spec, sweep_plan, log)
            folder.write_text("sweep.yaml", yaml.safe_dump(spec.raw, sort_keys=False))
            _write_manifest(folder, sweep_plan.manifest)
            with tracking(tracking_uri or spec.tracking_uri, folder, log):
                _execute(spec, root.uri, folder, sweep_plan.table, sweep_plan.pending, placeable, max_concurrent, log,
                         address=address)
    return load(folder.uri)


def resume_sweep(name: str, storage: str | Path, *, address: str | None = None, max_concurrent: int | None = None,
                 log: Log = print, tracking_uri: str | None = None):
    """Finish every cell x seed the sweep's manifest asks for that is not done (after a crash, a kill -9, ...)."""
    root = Storage(storage)
    folder = sweep_folder(root.uri, name)
    if not folder.exists("manifest.json"):
        raise UserError(f"no sweep named '{name}' under {root.uri}/sweeps to resume")
    spec = parse_sweep(yaml.safe_load(folder.read_text("sweep.yaml")), f"{folder.uri}/sweep.yaml", name=name)
    spec.search = None  # a resumed Optuna sweep finishes its recorded trials; it does not sample new ones
    manifest = read_manifest(folder)
    table = {entry_key(e["cell_id"], e["seed"]): {"cell_id": e["cell_id"], "seed": e["seed"],
                                                  "config": manifest["cells"][e["cell_id"]]["config"]}
             for e in manifest["entries"] if e.get("status") != RETIRED}
    pending = _not_done(folder, table)
    configs = {table[k]["cell_id"]: cell_from_dict(table[k]["config"]) for k in pending}
    with _RayCluster(address) as cluster:
        placeable = _refuse_before_writing(configs, f"{folder.uri}/sweep.yaml", root, folder, cluster, log)
        with sweep_lock(folder):
            with tracking(tracking_uri or spec.tracking_uri, folder, log):
                _execute(spec, root.uri, folder, table, _not_done(folder, table), placeable, max_concurrent, log,
                         address=address)
    return load(folder.uri)


def _execute(spec, storage: str, folder: Storage, table, pending, placeable: int, max_concurrent, log: Log,
             address: str | None = None) -> None:
    total = len(table)
    if spec.search is None and not pending:
        log(f"sweep '{spec.name}': all {total} cells x seeds are done; nothing to run, no training "
            f"(every stage is cached; results in {folder.uri})")
        return
    log(f"sweep '{spec.name}': {total - len(pending)} of {total} cells x seeds done, running {len(pending)}; storage {storage}")
    _run_tune(spec, storage, folder, table, pending, placeable, max_concurrent, log, address)


def _run_tune(spec, storage: str, folder: Storage, table, pending, placeable: int, max_concurrent, log: Log,
              address: str | None = None) -> None:
    from ray import tune

    from seal_ray.progress import RecordInterruptions, SweepProgress, quiet_tune_errors

    example = cell_from_dict(table[pending[0]]["config"]) if pending else spec.cells[0].config
    if spec.search is not None:
        param_space, tune_config, count = _optuna_setup(spec, table)
        concurrency = 1  # sequential Optuna: the same seed gives the same trials
    else:
        param_space = {"entry": tune.grid_search(pending)}
        concurrency = max(1, min(max_concurrent or placeable, placeable, len(pending)))
        # Reused actors: a trial's process (torch, transformers and the stage server imported) runs the
        # next trial too, instead of a new process paying those seconds for every cell x seed.
        tune_config = tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True)
        count = len(pending)
    run_id = f"tune-{int(time.time())}"
    # Nodes joining while the sweep runs are probed too; one that does not share the storage stops the sweep
    # (a Tune stopper holding only the watch's key, so the Tuner's state still pickles). Trials check the
    # storage token the driver wrote, so a node that joined with another folder at this path writes nothing.
    watch = StorageWatch(storage, log) if needs_probe(storage, address) else None
    token = write_storage_token(folder) if watch else None
    trainable = tune.with_parameters(run_cell_trial, storage=storage, folder=folder.uri, table=table, run_id=run_id,
                                     storage_token=token)
    trainable = tune.with_resources(trainable, trial_resources(example))
    # A trial lost with its node or worker process is started again by Tune (a cell that raises never
    # reaches Tune: run_cell_entry records it as failed); run_cell_trial holds each cell to its own budget.
    retries = max(cell_from_dict(table[key]["config"]).resources.max_failures for key in pending) if pending else \
        example.resources.max_failures
    log(f"running {count} trials, at most {concurrency} at a time (the cluster can place {placeable})")
    # Tune's own experiment state stays on the driver's disk: the sweep's folder is the source of truth.
    callbacks = [SweepProgress(count, concurrency, log), RecordInterruptions(folder, table, run_id, log)]
    tuner = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(name=run_id, storage_path=str(folder.local_path("tune")), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=retries), verbose=0,
                                  stop=watch.stopper() if watch else None),
    )
    with quiet_tune_errors(), watch or contextlib.nullcontext():  # a lost trial's story is in its record
        tuner.fit()
    _close_running_records(folder, [table[key] for key in pending])
    if watch:
        watch.raise_if_failed()


def _close_running_records(folder: Storage, entries: list[dict]) -> None:
    """No record stays 'running' once the sweep is over: a trial that died without writing its own
    record (its node lost after the last retry, or Tune stopped) is 'interrupted'."""
    for entry in entries:
        record = read_record(folder, entry["cell_id"], entry["seed"]) or {}
        if record.get("status") == "running":
            record_interrupted(folder, entry["cell_id"], entry["seed"], record.get("interruptions", []),
                               cell_from_dict(entry["config"]).resources.max_failures)


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
