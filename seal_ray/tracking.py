"""MLflow tracking of a sweep, read from the sweep's folder: a parent run per sweep, a child per cell x seed.

The sweep folder (results.py) stays the source of truth; MLflow gets a copy. While a sweep runs, a
thread on the driver polls the folder and logs each cell x seed that finished (done or failed): its
params (every config leaf), final metrics, curves (curves.py) as metric histories with steps, the
selector file, the cell's log and its curves file as artefacts, and provenance tags. After the sweep,
one last pass logs what is left. `seal-ray track NAME --tracking-uri URI` runs that pass alone.

Runs are found again by tags, never created twice: the parent by `seal_ray_sweep` + `seal_ray_role`,
a child by `seal_ray_entry` (sweep/cell-s<seed>). A child is complete once its `seal_ray_record` tag
(status and finish time of the record it copies) is set, last. A child left without it (a driver
killed while logging) or copying an older record (a failed cell that was run again) is deleted and
logged anew, so a resumed sweep continues the same parent and ends with one child per cell x seed.

Tracking never fails or slows a sweep: it runs beside the trials, its HTTP requests get a short
timeout and few retries, and the first error (a server that is down) prints one warning and turns
tracking off for the rest of the run; `seal-ray track` can upload it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from seal_ray.background import repeating
from seal_ray.config import flatten
from seal_ray.curves import cell_curves_rel, parse_points
from seal_ray.errors import UserError
from seal_ray.results import read_manifest, read_record
from seal_ray.storage import Storage

Log = Callable[[str], None]
POLL_S = 5.0
FINISHED_STATUSES = ("done", "failed")
SWEEP_TAG, ROLE_TAG, ENTRY_TAG, RECORD_TAG = "seal_ray_sweep", "seal_ray_role", "seal_ray_entry", "seal_ray_record"
PARENT_RUN_TAG = "mlflow.parentRunId"
BATCH = 100  # MLflow's log_batch takes at most 100 params and 1000 entities per call
# Applied unless the user set them: a server that is down is noticed in seconds, not after minutes of retries.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
PROBE_TIMEOUT_S = 3.0


def check_available(uri: str | None) -> None:
    """Before anything runs: a tracking URI needs the optional mlflow package."""
    if not uri:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(f"tracking URI {uri}: MLflow tracking needs the mlflow package: pip install 'seal-ray[mlflow]'") from None


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def experiment_name(sweep: str) -> str:
    return f"seal_ray/{sweep}"


def entry_tag(sweep: str, cell_id: str, seed: int) -> str:
    return f"{sweep}/{cell_id}-s{seed}"


def record_signature(record: dict[str, Any]) -> str:
    return f"{record.get('status')}:{record.get('finished')}"


class SweepTracker:
    """One sweep's runs in one MLflow tracking store (a server URI, or a local path such as ./mlruns)."""

    def __init__(self, uri: str, folder: Storage, log: Log = print):
        self.uri, self.folder, self.log = uri, folder, log
        self.name = Path(folder.uri).name
        self.client = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.logged: dict[str, str] = {}  # entry tag -> record signature of its complete child run

    def connect(self) -> None:
        """The client, the sweep's experiment and its parent run (found by tag, else created); reopened if finished."""
        check_available(self.uri)
        from mlflow import MlflowClient

        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        if not is_remote(self.uri):
            # MLflow 3 keeps the folder store (./mlruns, no server) behind this opt-in.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        else:
            _probe(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(experiment_name(self.name))
        self.experiment_id = (experiment.experiment_id if experiment is not None
                              else self.client.create_experiment(experiment_name(self.name)))
        parents = self._search(f"tags.{ROLE_TAG} = 'sweep' and tags.{SWEEP_TAG} = '{self.name}'")
        if parents:
            self.parent_id = parents[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=self.name,
                                         tags={ROLE_TAG: "sweep", SWEEP_TAG: self.name, "seal_ray_storage": self.folder.uri})
            self.parent_id = run.info.run_id
            if self.folder.exists("sweep.yaml"):
                self._artifact_text(self.parent_id, "sweep.yaml", self.folder.read_text("sweep.yaml"), "")
        by_entry: dict[str, list] = {}
        for run in self._search(f"tags.{ROLE_TAG} = 'cell' and tags.{SWEEP_TAG} = '{self.name}'"):
            by_entry.setdefault(run.data.tags.get(ENTRY_TAG, ""), []).append(run)
        for tag, runs in by_entry.items():
            # Logged: exactly one complete child. Anything else is redone by sync (its runs deleted first).
            if len(runs) == 1 and RECORD_TAG in runs[0].data.tags:
                self.logged[tag] = runs[0].data.tags[RECORD_TAG]

    def sync(self) -> int:
        """Log every finished cell x seed not logged yet (or logged from an older record); returns how many."""
        manifest = read_manifest(self.folder)
        count = 0
        for entry in manifest["entries"]:
            cell_id, seed = entry["cell_id"], entry["seed"]
            record = read_record(self.folder, cell_id, seed) or {}
            if record.get("status") not in FINISHED_STATUSES:
                continue
            tag = entry_tag(self.name, cell_id, seed)
            if self.logged.get(tag) == record_signature(record):
                continue
            self._log_entry(manifest["cells"][cell_id], cell_id, seed, record, tag)
            count += 1
        return count

    def finish(self) -> None:
        self.client.set_terminated(self.parent_id, "FINISHED")

    # --- one cell x seed --------------------------------------------------------------------------

    def _log_entry(self, cell: dict, cell_id: str, seed: int, record: dict[str, Any], tag: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        for stale in self._search(f"tags.{ENTRY_TAG} = '{tag}'"):
            self.client.delete_run(stale.info.run_id)  # half-logged, or from an older record
        metrics = record.get("metrics", {})
        tags = {PARENT_RUN_TAG: self.parent_id, ROLE_TAG: "cell", SWEEP_TAG: self.name, ENTRY_TAG: tag,
                "seal_ray_cell": cell_id, "seal_ray_seed": str(seed), "seal_ray_label": cell.get("label", ""),
                "seal_ray_studies": ",".join(cell.get("studies", [])), "seal_ray_status": str(record.get("status")),
                "seal_ray_host": str(record.get("host", ""))}
        tags.update({name: str(value) for name, value in metrics.items() if name.startswith("prov/")})
        if record.get("error"):
            tags["seal_ray_error"] = str(record["error"])[:5000]
        run_id = self.client.create_run(self.experiment_id, run_name=f"{cell.get('label', cell_id)} s{seed}", tags=tags,
                                        start_time=_ms(record.get("started"))).info.run_id
        params = [Param(key, _param(value)) for key, value in flatten({**cell["config"], "seed": seed}).items()]
        values = [Metric(name, float(value), _ms(record.get("finished")), 0) for name, value in metrics.items()
                  if isinstance(value, (int, float)) and not name.startswith("prov/")]
        if record.get("seconds") is not None:
            values.append(Metric("cell_seconds", float(record["seconds"]), _ms(record.get("finished")), 0))
        curves_text = self.folder.read_text(cell_curves_rel(cell_id, seed)) or ""
        values += curve_metrics(parse_points(curves_text), _ms(record.get("finished")))
        for start in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[start : start + BATCH])
        for start in range(0, len(values), 10 * BATCH):
            self.client.log_batch(run_id, metrics=values[start : start + 10 * BATCH])
        selector = metrics.get("artifact/selector_path")
        if selector and Path(selector).is_file():
            self.client.log_artifact(run_id, selector, "selector")
        log_text = self.folder.read_text(f"logs/{cell_id}-s{seed}.log")
        if log_text:
            self._artifact_text(run_id, f"{cell_id}-s{seed}.log", log_text, "logs")
        if curves_text:
            self._artifact_text(run_id, f"{cell_id}-s{seed}.jsonl", curves_text, "curves")
        # Last: the tag that makes the run complete (a run without it is redone, never duplicated).
        self.client.log_batch(run_id, tags=[RunTag(RECORD_TAG, record_signature(record))])
        self.client.set_terminated(run_id, "FINISHED" if record.get("status") == "done" else "FAILED",
                                   end_time=_ms(record.get("finished")))
        self.logged[tag] = record_signature(record)

    def _artifact_text(self, run_id: str, name: str, text: str, artifact_path: str) -> None:
        with tempfile.TemporaryDirectory(prefix="seal-ray-track-") as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path), artifact_path or None)

    def _search(self, filter_string: str) -> list:
        from mlflow.entities import ViewType

        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, ViewType.ACTIVE_ONLY, 1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs


def curve_metrics(points: list[dict[str, Any]], timestamp: int) -> list:
    """Curve points as MLflow metric histories: curve/<stage>/<metric> over optimiser steps, and
    curve/<stage>/epoch/<metric> over 0-based epochs for the epoch-end points."""
    from mlflow.entities import Metric

    out = []
    for point in points:
        by_epoch = point.get("kind") == "epoch"
        prefix = f"curve/{point['stage']}/epoch/" if by_epoch else f"curve/{point['stage']}/"
        step = int(point["epoch"] if by_epoch else point["step"])
        for name, value in point.items():
            if name not in ("stage", "kind", "step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(Metric(prefix + name, float(value), timestamp, step))
    return out


def _param(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param value


def _ms(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1000)


def _probe(uri: str) -> None:
    """Fail in seconds when nothing listens at the server's address (MLflow's own client would retry for long)."""
    parsed = urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise ConnectionError(f"nothing answers at {parsed.hostname}:{port} ({err})") from None


# --- during a sweep --------------------------------------------------------------------------------


class _Guard:
    """Runs tracking calls; the first error prints one warning and turns tracking off."""

    def __init__(self, tracker: SweepTracker, log: Log):
        self.tracker, self.log, self.off = tracker, log, False

    def __call__(self, fn: Callable[[], Any]) -> None:
        if self.off:
            return
        try:
            fn()
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - tracking must never fail the sweep
            self.off = True
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.log(f"warning: MLflow tracking at {self.tracker.uri} failed ({first[:300]}); the sweep goes on "
                     f"without it. Upload it later: seal-ray track {self.tracker.name} --tracking-uri {self.tracker.uri}")


@contextlib.contextmanager
def tracking(uri: str | None, folder: Storage, log: Log = print) -> Iterator[None]:
    """Track the sweep in `folder` while the body runs (nothing when `uri` is empty)."""
    if not uri:
        yield
        return
    tracker = SweepTracker(uri, folder, log)
    guard = _Guard(tracker, log)
    guard(tracker.connect)

    def poll() -> bool:
        if not guard.off:
            guard(tracker.sync)
        return not guard.off

    try:
        with repeating(POLL_S, poll, name="seal-ray-mlflow"):
            yield
    finally:
        guard(tracker.sync)
        guard(tracker.finish)
        if not guard.off:
            log(f"MLflow: sweep '{tracker.name}' tracked at {uri} (experiment {experiment_name(tracker.name)}, "
                f"{len(tracker.logged)} cell runs)")


def upload(uri: str, folder: Storage, log: Log = print) -> int:
    """`seal-ray track`: log a sweep from storage now; an unreachable server is an error here."""
    tracker = SweepTracker(uri, folder, log)
    try:
        tracker.connect()
        count = tracker.sync()
        tracker.finish()
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - one clear message instead of a client traceback
        raise UserError(f"MLflow tracking at {uri}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
    return count
