"""`seal-ray doctor`: one screen saying what a sweep here would meet, each line ok / warning / error with its fix.

It connects to the Ray cluster a sweep would use (a local Ray without --address), lists every node's
CPUs and GPUs, runs the storage probe of cluster_probe.py on every node, asks each node for its torch,
CUDA and NCCL and its free disk, and, given a sweep file, checks that file, that its cells fit the
cluster and that the judge's API-key variable is set. An error means a sweep could not run: exit 2.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from seal_ray.cluster_probe import FIX, alive_nodes, probe_storage, run_on_each_node
from seal_ray.errors import UserError
from seal_ray.storage import Storage, cache_root, is_uri

LOW_DISK_GIB = 20.0  # a real model's stages and checkpoints need tens of GiB
MIN_DISK_GIB = 200 / 1024  # Storage.check_writable's floor


@dataclass
class Finding:
    level: str  # ok | warning | error
    subject: str
    text: str
    fix: str = ""

    def line(self) -> str:
        fix = f"\n{'':<24}fix: {self.fix}" if self.fix and self.level != "ok" else ""
        return f"{self.level:<8}{self.subject:<16}{self.text}{fix}"


def node_facts(storage: str, env_names: tuple[str, ...]) -> dict:
    """On a node: its torch, CUDA, NCCL, free disk where the stages go, and which variables are set."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    disk = cache_root() if is_uri(storage) else Path(storage).expanduser()
    while not disk.exists() and disk != disk.parent:  # the storage may not exist yet on that node
        disk = disk.parent
    return {
        "hostname": socket.gethostname(), "torch": torch.__version__, "cuda": cuda,
        "cuda_version": torch.version.cuda, "gpus": torch.cuda.device_count() if cuda else 0,
        "nccl": bool(dist.is_available() and dist.is_nccl_available()),
        "free_gib": shutil.disk_usage(disk).free / 2**30, "disk": str(disk),
        "env": {name: bool(os.environ.get(name)) for name in env_names},
    }


def _sweep_findings(sweep_file: str | None) -> tuple[list[Finding], object | None]:
    if not sweep_file:
        return [], None
    from seal_ray.sweep_spec import load_sweep

    try:
        spec = load_sweep(sweep_file)
    except UserError as err:
        return [Finding("error", "sweep", str(err), "correct the file (seal-ray validate checks it)")], None
    return [Finding("ok", "sweep", f"{sweep_file}: sweep '{spec.name}', {spec.size()}")], spec


def _judge_key_names(spec) -> tuple[str, ...]:
    names = {c.config.evaluation.openai.api_key_env for c in spec.cells
             if c.config.evaluation.judge == "openai" and c.config.evaluation.openai.api_key_env}
    return tuple(sorted(names))


def _ray_findings(address: str | None) -> list[Finding]:
    import ray

    findings = [Finding("ok", "ray", f"Ray {ray.__version__}, connected to "
                        + (address if address else "a local Ray started for this check"))]
    try:
        from ray._private.authentication.authentication_utils import get_authentication_mode_name
        from ray._raylet import get_authentication_mode

        mode = get_authentication_mode_name(get_authentication_mode())
    except Exception:  # noqa: BLE001 - private API: report what the environment says instead
        mode = os.environ.get("RAY_AUTH_MODE", "unknown")
    exported = os.environ.get("RAY_AUTH_MODE")
    if exported == "token" or mode == "disabled":
        findings.append(Finding("ok", "auth", f"auth mode {mode}" + (" (RAY_AUTH_MODE=token exported)" if exported else "")))
    else:
        findings.append(Finding("warning", "auth", f"auth mode {mode}; RAY_AUTH_MODE is not exported in this shell",
                                "export RAY_AUTH_MODE=token before `ray start --head`, `ray start --address` and "
                                "`ray job submit` (else: 'Missing authentication token')"))
    return findings


def _node_findings(nodes: list[dict], facts: dict[str, object], use_gpu: bool) -> list[Finding]:
    findings = []
    for node in nodes:
        answer = facts[node["NodeID"]]
        resources = node.get("Resources", {})
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        subject = answer.name
        if not answer.ok:
            findings.append(Finding("error", "node", f"{subject}: {cpus:g} CPU, {gpus:g} GPU; {answer.problem}",
                                    "check the node's Ray logs; `ray status` lists the nodes"))
            continue
        value = answer.value
        cuda = f"cuda {value['cuda_version']}, {value['gpus']} device(s)" if value["cuda"] else "no cuda"
        text = (f"{subject}: {cpus:g} CPU, {gpus:g} GPU; torch {value['torch']} ({cuda}, "
                f"nccl {'yes' if value['nccl'] else 'no'}); {value['free_gib']:.1f} GiB free at {value['disk']}")
        level, fix = "ok", ""
        if gpus and not (value["cuda"] and value["nccl"]):
            level, fix = "error", "install a CUDA build of torch on this node (torch.cuda and NCCL are needed for use_gpu)"
        elif value["free_gib"] < MIN_DISK_GIB:
            level, fix = "error", "free disk space, or point --storage / $SEAL_RAY_CACHE at a larger disk"
        elif value["free_gib"] < LOW_DISK_GIB and use_gpu:
            level, fix = "warning", "a real model's stages and checkpoints need tens of GiB: use a larger disk"
        findings.append(Finding(level, "node", text, fix))
    return findings


def _storage_findings(storage: str, nodes: list[dict]) -> list[Finding]:
    try:
        root = Storage(storage)
        root.check_writable()
    except UserError as err:
        return [Finding("error", "storage", str(err), "choose a folder this user can write (or fix its mount), "
                        "or an s3:// or gs:// URI")]
    if not root.is_local:
        return [Finding("ok", "storage", f"{root.uri}: writable; a cloud URI is the same for every node")]
    answers = probe_storage(storage, nodes)
    failed = [a for a in answers if not a.ok]
    findings = [Finding("error", "storage", f"{root.uri}: {a.name}: {a.problem}", FIX) for a in failed]
    if not failed:
        findings.append(Finding("ok", "storage", f"{root.uri}: read and written from each of the {len(answers)} node(s)"))
    return findings


def _sweep_fit_findings(spec, nodes: list[dict], facts: dict, address: str | None) -> list[Finding]:
    from seal_ray.sweep import _placeable, cell_footprint

    findings = []
    totals: dict[str, float] = {}
    for node in nodes:
        for name in ("CPU", "GPU"):
            totals[name] = totals.get(name, 0.0) + node.get("Resources", {}).get(name, 0.0)
    too_big = [c.label for c in spec.cells if _placeable(totals, cell_footprint(c.config)) == 0]
    if too_big:
        level = "warning" if address else "error"
        findings.append(Finding(level, "resources", f"{len(too_big)} cell(s) need more than the cluster has "
                                f"(CPU {totals.get('CPU', 0):g}, GPU {totals.get('GPU', 0):g}): {', '.join(too_big[:3])}",
                                "lower resources.num_workers / cpus_per_worker, or add nodes (an autoscaler may)"))
    else:
        findings.append(Finding("ok", "resources", "every cell fits the cluster's CPUs and GPUs"))
    for name in _judge_key_names(spec):
        missing = [facts[n["NodeID"]].name for n in nodes
                   if facts[n["NodeID"]].ok and not facts[n["NodeID"]].value["env"].get(name)]
        if not os.environ.get(name):
            findings.append(Finding("error", "judge", f"the judge's API key variable {name} is not set here",
                                    f"export {name}=<your key> (or api_key_env: null for a server without keys)"))
        elif missing:
            findings.append(Finding("warning", "judge", f"{name} is set here but not on {', '.join(missing)}",
                                    f"export {name} before `ray start` on those nodes (cells judge where they run)"))
        else:
            findings.append(Finding("ok", "judge", f"{name} is set here and on every node"))
    return findings


def diagnose(address: str | None, storage: str, sweep_file: str | None) -> list[Finding]:
    findings, spec = _sweep_findings(sweep_file)
    import ray

    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False if address is None else None)
    except Exception as err:  # noqa: BLE001 - whatever stops the connection is the finding
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return findings + [Finding("error", "ray", f"cannot connect to Ray at {address or 'a local Ray'}: {text}",
                                   "start the cluster (`ray start --head`, or `ray up cluster.yaml`) and export "
                                   "RAY_AUTH_MODE=token; --address auto finds a cluster started on this machine")]
    try:
        findings += _ray_findings(address)
        nodes = alive_nodes()
        env_names = _judge_key_names(spec) if spec else ()
        facts = {a.node_id: a for a in run_on_each_node(node_facts, nodes, lambda node: (storage, env_names))}
        use_gpu = bool(spec and any(c.config.resources.use_gpu for c in spec.cells))
        findings += _node_findings(nodes, facts, use_gpu)
        findings += _storage_findings(storage, nodes)
        if spec:
            findings += _sweep_fit_findings(spec, nodes, facts, address)
    finally:
        ray.shutdown()
    return findings


def run_doctor(address: str | None, storage: str, sweep_file: str | None, out: Callable[[str], None] = print) -> int:
    """Print the screen; 2 when a sweep could not run, else 0."""
    out(f"seal-ray doctor: Ray {address or '(local)'}, storage {storage}"
        + (f", sweep {sweep_file}" if sweep_file else ""))
    findings = diagnose(address, storage, sweep_file)
    for finding in findings:
        out(finding.line())
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    out(f"{errors} error(s), {warnings} warning(s): " + ("a sweep could not run here" if errors else "a sweep can run here"))
    return 2 if errors else 0
