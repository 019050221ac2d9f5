"""Does every node of the Ray cluster see the same storage folder? A probe task per node says.

The stage cache, the cell records and resume all assume one storage seen alike by every node. A
node that sees a different folder at the same path (an NFS mount that failed, leaving a node-local
/mnt/seal) would scatter records and stages over node-local disks, silently. So, before a sweep
with a local or NFS `--storage` runs on a cluster (`--address`), the driver writes a token under the
storage, and a task pinned to each alive node (NodeAffinitySchedulingStrategy, soft=False) reads it
and writes a reply that the driver then reads. Any node failing either way stops the sweep before
any work (exit 2, the nodes and the path named, with the fix); the probe's files are removed.

Nodes that join while the sweep runs (an autoscaler) are probed by `StorageWatch`, a thread of the
sweep's driver: one that fails stops the sweep cleanly (Tune stops its trials; `sweep resume`
finishes them once the node is fixed or gone) and the driver exits 2 naming it. A trial that lands on
such a node before its probe ends checks the sweep's storage token first and refuses to run, so it
never writes a record or a stage anywhere. Cloud URIs (s3://, gs://) need no probe: every node
reaches the same bucket. `seal-ray doctor` runs the same probe.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from seal_ray.background import repeating
from seal_ray.errors import UserError
from seal_ray.storage import Storage, is_uri

PROBE_DIR = ".seal-ray-probe"
DRIVER_TOKEN = "driver.token"
TOKEN_FILE = ".storage-token"  # in a sweep's folder: what every trial must read before it writes
# A node that has not answered by then is failed (a read on a hung mount blocks forever). Generous: a
# fresh node may first set up the job's runtime env (the uploaded --working-dir) before it starts a task.
ANSWER_S = 300.0
WATCH_EVERY_S = 5.0
FIX = ("every node must see the same folder at this path: mount the shared file system there on every node "
       "(cluster.yaml's initialization_commands), or pass an s3:// or gs:// URI as --storage")


@dataclass
class NodeAnswer:
    """One node's answer to a task pinned to it (`problem` is '' when all went well)."""

    node_id: str
    address: str
    hostname: str = ""
    problem: str = ""
    value: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def name(self) -> str:
        return f"node {self.node_id[:12]} ({self.hostname or '?'}, {self.address})"


def alive_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def run_on_each_node(function: Callable[..., dict], nodes: list[dict], args_of: Callable[[dict], tuple] = lambda node: (),
                     timeout_s: float = ANSWER_S) -> list[NodeAnswer]:
    """`function(*args_of(node))` as a zero-CPU task pinned to each node, all in flight at once; a task
    that fails or does not answer in time is that node's problem."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(function)
    refs = {}
    for node in nodes:
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        refs[node["NodeID"]] = remote.options(num_cpus=0, max_retries=0, scheduling_strategy=strategy).remote(*args_of(node))
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    answers = []
    for node in nodes:
        answer = NodeAnswer(node["NodeID"], node.get("NodeManagerAddress", "?"), node.get("NodeManagerHostname", ""))
        ref = refs[node["NodeID"]]
        if ref not in ready:
            ray.cancel(ref, force=True)
            answer.problem = (f"no answer within {timeout_s:.0f} s (the node could not start a task: see `ray status`; "
                              "or a read on the storage hangs, as on a hung mount)")
        else:
            try:
                answer.value = ray.get(ref)
                answer.hostname = answer.value.get("hostname", answer.hostname)
            except Exception as err:  # noqa: BLE001 - a failed task is reported, whatever it raised
                text = str(err).strip()
                answer.problem = f"the task failed: {text.splitlines()[-1] if text else type(err).__name__}"
        answers.append(answer)
    return answers


def _answer_probe(run_dir: str, token: str, node_id: str) -> dict:
    """On the node: read the driver's token, write a reply the driver will read (nothing when the read fails)."""
    answer: dict[str, Any] = {"hostname": socket.gethostname(), "problem": ""}
    try:
        seen = (Path(run_dir) / DRIVER_TOKEN).read_text()
    except OSError as err:
        answer["problem"] = f"cannot read the token the driver wrote ({err.strerror or err})"
        return answer
    if seen != token:
        answer["problem"] = "reads a different token than the driver wrote (another folder at this path)"
        return answer
    try:
        (Path(run_dir) / f"{node_id}.reply").write_text(token + node_id)
        answer["wrote"] = True
    except OSError as err:
        answer["problem"] = f"cannot write under it ({err.strerror or err})"
    return answer


def _remove_reply(run_dir: str, node_id: str) -> dict:
    (Path(run_dir) / f"{node_id}.reply").unlink(missing_ok=True)
    return {}


def probe_storage(storage: str, nodes: list[dict] | None = None, timeout_s: float = ANSWER_S) -> list[NodeAnswer]:
    """Each node's answer: can it read what the driver wrote under `storage`, and can the driver read its reply?

    Needs a connected Ray. A cloud URI answers ok for every node without a task. The probe's files are
    removed before returning, on the driver's side and on any node whose reply the driver could not see.
    """
    nodes = alive_nodes() if nodes is None else nodes
    if is_uri(storage):
        return [NodeAnswer(n["NodeID"], n.get("NodeManagerAddress", "?"), n.get("NodeManagerHostname", "")) for n in nodes]
    root = Storage(storage)
    run_dir = root.local_root / PROBE_DIR / uuid.uuid4().hex
    token = uuid.uuid4().hex
    try:
        run_dir.mkdir(parents=True)
        (run_dir / DRIVER_TOKEN).write_text(token)
    except OSError as err:
        raise UserError(f"storage {root.uri}: not writable ({err.strerror or err})") from None
    try:
        answers = run_on_each_node(_answer_probe, nodes, lambda node: (str(run_dir), token, node["NodeID"]), timeout_s)
        stray = []
        for answer in answers:
            if answer.ok and answer.value.get("problem"):
                answer.problem = answer.value["problem"]
            elif answer.ok and not _reply_seen(run_dir, token, answer.node_id):
                answer.problem = ("wrote its reply, but the driver cannot read it (another folder at this path, "
                                  "or a one-way mount)")
                stray.append(answer.node_id)
        if stray:  # the reply went to that node's own folder: take it away there too
            run_on_each_node(_remove_reply, [n for n in nodes if n["NodeID"] in stray],
                             lambda node: (str(run_dir), node["NodeID"]), timeout_s=10)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        try:
            run_dir.parent.rmdir()  # only when no other probe is running
        except OSError:
            pass
    return answers


def _reply_seen(run_dir: Path, token: str, node_id: str) -> bool:
    reply = run_dir / f"{node_id}.reply"
    for _ in range(5):  # a network file system may show a fresh file a moment late
        try:
            return reply.read_text() == token + node_id
        except OSError:
            time.sleep(0.5)
    return False


def storage_problem(storage: str, failed: list[NodeAnswer]) -> str:
    nodes = "; ".join(f"{a.name}: {a.problem}" for a in failed)
    return (f"storage {Storage(storage).uri} is not shared by every node of the Ray cluster: {nodes}. "
            f"Fix: {FIX}")


def needs_probe(storage: str, address: str | None) -> bool:
    """A local or NFS storage on a cluster given by --address (a local Ray is one machine: nothing to probe)."""
    return address is not None and not is_uri(storage)


def refuse_unshared_storage(storage: str, address: str | None, log: Callable[[str], None]) -> None:
    """Before a sweep writes anything: a UserError (exit 2) naming every node that does not share `storage`.

    Needs a connected Ray (the sweep's own connection: sweep.py keeps it for the run).
    """
    if not needs_probe(storage, address):
        return
    answers = probe_storage(storage)
    failed = [a for a in answers if not a.ok]
    if failed:
        raise UserError(storage_problem(storage, failed))
    log(f"storage {Storage(storage).uri}: read and written from each of the {len(answers)} node(s) of the cluster")


# --- while the sweep runs ---------------------------------------------------------------------


def write_storage_token(folder: Storage) -> str:
    """A fresh token in the sweep's folder; a trial that cannot read it is on a node with another folder."""
    token = uuid.uuid4().hex
    folder.write_text(TOKEN_FILE, token)
    return token


def check_storage_token(folder: Storage, token: str | None) -> None:
    """In a trial, before it writes anything: refuse to run on a node that does not see the sweep's folder."""
    if token is None or folder.read_text(TOKEN_FILE) == token:
        return
    raise UserError(f"this node ({socket.gethostname()}) does not see the sweep's folder {folder.uri} "
                    f"(its storage token is missing or different); the trial writes nothing here. Fix: {FIX}")


_WATCHING: dict[str, "StorageWatch"] = {}  # by key: Tune pickles its stopper, which must not hold a thread


def _watch_failed(key: str) -> bool:
    watch = _WATCHING.get(key)
    return bool(watch and watch.failed)


class StorageWatch:
    """Probes every node that joins while a sweep runs; one that fails stops the sweep (a Tune Stopper).

    Use: `with StorageWatch(storage, log) as watch:` around `tuner.fit()`, with `watch.stopper()` in the
    RunConfig's `stop`; after the fit, `watch.raise_if_failed()`.
    """

    def __init__(self, storage: str, log: Callable[[str], None], every_s: float = WATCH_EVERY_S):
        self.storage, self.log = storage, log
        # Every node is probed again on the first pass: one may have joined since the sweep's own probe.
        self.known: set[str] = set()
        self._first_pass = True
        self.failed: list[NodeAnswer] = []
        self.key = uuid.uuid4().hex
        self._stopping = False
        self._repeat = repeating(every_s, self._tick, name="seal-ray-storage-watch", immediately=True,
                                 join_timeout_s=every_s)  # a probe still waiting on a node is of no use any more

    def __enter__(self) -> "StorageWatch":
        _WATCHING[self.key] = self
        self._repeat.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        _WATCHING.pop(self.key, None)
        self._stopping = True
        self._repeat.__exit__(None, None, None)

    def _tick(self) -> bool:
        try:
            self.check_new_nodes()
        except Exception as err:  # noqa: BLE001 - the watch must not kill the sweep; say why it paused
            if not self._stopping:  # (after the sweep, Ray's shutdown interrupts a probe: no news)
                self.log(f"warning: storage watch: {type(err).__name__}: {err}")
        return not self.failed

    def check_new_nodes(self) -> list[NodeAnswer]:
        joined = [node for node in alive_nodes() if node["NodeID"] not in self.known]
        if not joined:
            return []
        answers = probe_storage(self.storage, joined)
        self.known.update(node["NodeID"] for node in joined)
        for answer in answers:
            if answer.ok and not self._first_pass:
                self.log(f"{answer.name} joined; it reads and writes the storage")
            elif not answer.ok:
                self.failed.append(answer)
                self.log(f"error: {answer.name} joined but does not share the storage ({answer.problem}); "
                         "stopping the sweep")
        self._first_pass = False
        return answers

    def stopper(self):
        """A Tune Stopper that stops every trial once a node failed (it holds only this watch's key)."""
        from ray import tune

        key = self.key

        class _StopOnUnsharedNode(tune.Stopper):
            def __call__(self, trial_id: str, result: dict) -> bool:
                return False

            def stop_all(self) -> bool:
                return _watch_failed(key)

        return _StopOnUnsharedNode()

    def raise_if_failed(self) -> None:
        if self.failed:
            raise UserError(storage_problem(self.storage, self.failed) + "; the sweep was stopped: run `seal-ray "
                            "sweep resume` once the node is fixed or gone (finished cells are kept)")
