"""Heavy stages in a fresh process each, forked from one warm server: the same result as in-process, comparable memory figures."""

import dataclasses

import pytest
import torch

from seal_ray.errors import StageFailed
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import CellPipeline
from seal_ray.store import StageStore


def test_an_isolated_stage_gives_the_same_selector_and_forwards_its_log(tmp_path, tiny_config):
    # The inline run uses this process's kernels, pinned by conftest as the isolated stage's are (kernels.py).
    lines = []
    inline = CellPipeline(tiny_config, StageStore(tmp_path / "a"), LocalExecutor(), log=lambda s: None).run()
    with LocalExecutor(isolate=True) as executor:
        isolated = CellPipeline(tiny_config, StageStore(tmp_path / "b"), executor, log=lines.append).run()
        server = executor._server.process
        assert server is not None and server.poll() is None  # one warm server forked every stage's process
    assert server.returncode == 0  # stopped when the executor closed
    a = torch.load(inline.stages["selector"].dir / "selector.pt", weights_only=True)
    b = torch.load(isolated.stages["selector"].dir / "selector.pt", weights_only=True)
    assert torch.equal(a, b)
    assert any(line.startswith("[selector] epoch 2/2") for line in lines)  # printed by the child process
    assert isolated.metrics["mem/selector_peak_mb"] > 0
    measure = isolated.stages["selector"].meta["measure"]
    # packed batches by default (resources.pack_batches): little padding, never all of it
    assert 0 < measure["loop_seconds"] < measure["seconds"] and 0 < measure["padding_share"] < 1


def test_a_failure_in_an_isolated_stage_is_reported_with_its_reason(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("SEAL_RAY_FAULT", "base@0.0=raise")  # the first heavy stage: one process to start
    with pytest.raises(StageFailed, match="injected fault in stage base"):
        CellPipeline(tiny_config, StageStore(tmp_path), LocalExecutor(isolate=True), log=lambda s: None).run()


def test_a_killed_isolated_stage_fails_cleanly_and_resumes(tmp_path, tiny_config, monkeypatch):
    config = dataclasses.replace(tiny_config, selector=dataclasses.replace(tiny_config.selector, epochs=3))
    monkeypatch.setenv("SEAL_RAY_FAULT", "selector@1.0=kill")
    monkeypatch.setenv("SEAL_RAY_FAULT_ONCE", str(tmp_path / "fired"))
    store = StageStore(tmp_path / "s")
    executor = LocalExecutor(isolate=True)
    with pytest.raises(StageFailed, match="process died"):
        CellPipeline(config, store, executor, log=lambda s: None).run()
    lines = []
    outcome = CellPipeline(config, store, executor, log=lines.append).run()  # the same server forks the retry
    executor.close()
    assert "[selector] resuming from the checkpoint after epoch 1" in lines
    assert outcome.stages["selector"].meta["resumed_from_epoch"] == 1


def test_shared_executors_of_one_process_use_one_stage_server_that_outlives_them():
    # A sweep's trial process runs cell after cell: one server start for all of them.
    from seal_ray import executor as executor_module

    first, second = LocalExecutor(isolate=True, shared_server=True), LocalExecutor(isolate=True, shared_server=True)
    try:
        server = first._server.get()
        first.close()
        assert server.poll() is None and second._server.get() is server
        own = LocalExecutor(isolate=True)
        assert own._server is not first._server and own._server.process is None  # started only when used
    finally:
        executor_module._PROCESS_SERVER.stop()
    assert server.returncode == 0
