"""One cell end to end in one process, on a tiny world: metrics, artifacts, caching, resume."""

import dataclasses
import json

import pytest
import torch

from seal_ray.checkpoints import Checkpointer
from seal_ray.cli import main
from seal_ray.config import load_cell_config
from seal_ray.distributed import LocalDist
from seal_ray.errors import StageFailed
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import CellPipeline
from seal_ray.store import StageStore

EXPECTED = ["winrate/hh", "winrate/orca", "winrate/hexphi", "safety/refusal_rate", "task/orca_accuracy",
            "safety/refusal_logprob_margin", "safety/over_refusal_rate",
            "selector/auroc_unsafe", "mem/selector_peak_mb", "time/selector_s", "mem/finetune_peak_mb",
            "time/finetune_s", "mem/base_peak_mb", "time/generate_s", "prov/git_commit", "prov/config_hash"]


def test_seal_ray_run_writes_metrics_and_artifacts(tmp_path, tiny_overrides, capsys):
    args = ["run", "--out", str(tmp_path / "cell")]
    for override in tiny_overrides:
        args += ["--set", override]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "cell" / "metrics.json").read_text())
    for name in EXPECTED:
        assert name in metrics, name
    assert 0.0 <= metrics["winrate/hexphi"] <= 100.0
    assert 0.0 <= metrics["selector/auroc_unsafe"] <= 1.0
    logits = torch.load(tmp_path / "cell" / "selector.pt", weights_only=True)
    assert logits.shape == (60,) and logits.dtype == torch.float32
    kept = json.loads((tmp_path / "cell" / "kept_ids.json").read_text())
    assert len(kept) == 48  # floor(0.8 * 60)
    # the configured test sets, plus the mini world's look-alikes for the over-refusal rate
    assert set(json.loads((tmp_path / "cell" / "generations.json").read_text())) == {"hh", "orca", "hexphi", "xstest"}
    assert 0.0 <= metrics["safety/over_refusal_rate"] <= 1.0 and "winrate/xstest" not in metrics


def test_standard_sft_scores_exactly_fifty_against_itself(tmp_path, tiny_config):
    sft = dataclasses.replace(tiny_config, selection=dataclasses.replace(tiny_config.selection, method="sft"))
    metrics = CellPipeline(sft, StageStore(tmp_path), LocalExecutor(), log=lambda s: None).run().metrics
    assert metrics["winrate/hh"] == metrics["winrate/orca"] == metrics["winrate/hexphi"] == 50.0


def test_cells_share_the_base_model_and_the_sft_reference(tmp_path, tiny_config):
    store = StageStore(tmp_path)
    for method in ("seal", "random", "oracle"):
        cell = dataclasses.replace(tiny_config, selection=dataclasses.replace(tiny_config.selection, method=method))
        CellPipeline(cell, store, LocalExecutor(), log=lambda s: None).run()
    computed = [e["stage"] for e in store.events() if e["event"] == "computed"]
    assert computed.count("base") == 1
    assert computed.count("finetune") == 4  # seal, random, oracle and the one shared SFT reference
    assert computed.count("selector") == 1


def test_seal_keeping_every_row_fine_tunes_exactly_like_sft(tmp_path, tiny_config):
    store = StageStore(tmp_path)
    outcomes = {}
    for method in ("seal", "sft"):
        cell = dataclasses.replace(tiny_config, selection=dataclasses.replace(tiny_config.selection, method=method, topp=1.0))
        outcomes[method] = CellPipeline(cell, store, LocalExecutor(), log=lambda s: None).run()
    weights = {m: _weights(o.stages["finetune"].dir / "model") for m, o in outcomes.items()}
    for name in weights["sft"]:
        assert torch.equal(weights["sft"][name], weights["seal"][name]), name


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(next(model_dir.glob("*.safetensors"))))


def test_gradient_accumulation_equals_one_big_batch(tmp_path, tiny_config):
    """1 worker with micro-batches of 4 and of 8 (global batch 8): the same selector logits."""
    logits = {}
    for micro in (4, 8):
        cell = dataclasses.replace(tiny_config, resources=dataclasses.replace(tiny_config.resources, micro_batch_size=micro))
        outcome = CellPipeline(cell, StageStore(tmp_path / str(micro)), LocalExecutor(), log=lambda s: None).run()
        logits[micro] = torch.load(outcome.stages["selector"].dir / "selector.pt", weights_only=True)
    assert torch.allclose(logits[4], logits[8], atol=1e-5)


def test_a_stage_interrupted_mid_training_resumes_from_its_checkpoint(tmp_path, tiny_config, monkeypatch):
    """A fault after the first epoch; the rerun resumes at epoch 1 and ends where an uninterrupted run ends."""
    config = dataclasses.replace(tiny_config, selector=dataclasses.replace(tiny_config.selector, epochs=3))
    clean = CellPipeline(config, StageStore(tmp_path / "clean"), LocalExecutor(), log=lambda s: None).run()

    monkeypatch.setenv("SEAL_RAY_FAULT", "selector@1.2=raise")
    monkeypatch.setenv("SEAL_RAY_FAULT_ONCE", str(tmp_path / "fired"))
    lines = []
    store = StageStore(tmp_path / "faulty")
    with pytest.raises(StageFailed, match="injected fault"):
        CellPipeline(config, store, LocalExecutor(), log=lines.append).run()
    resumed = CellPipeline(config, store, LocalExecutor(), log=lines.append).run()
    assert "[selector] resuming from the checkpoint after epoch 1" in lines
    assert resumed.stages["selector"].meta["resumed_from_epoch"] == 1
    a = torch.load(clean.stages["selector"].dir / "selector.pt", weights_only=True)
    b = torch.load(resumed.stages["selector"].dir / "selector.pt", weights_only=True)
    assert torch.equal(a, b)


def test_checkpointer_keeps_only_the_newest_and_loads_safely(tmp_path):
    checkpointer = Checkpointer(tmp_path, LocalDist())
    for epoch in (1, 2, 3):
        checkpointer.save(epoch, {"w": torch.full((2,), float(epoch))})
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_0003.pt"]
    epoch, state = checkpointer.latest()
    assert epoch == 3 and state["w"].tolist() == [3.0, 3.0]


def test_a_nan_loss_fails_the_stage_with_that_reason(tmp_path, tiny_config):
    config = dataclasses.replace(tiny_config, finetune=dataclasses.replace(tiny_config.finetune, lr=1e30),
                                 selection=dataclasses.replace(tiny_config.selection, method="sft"))
    config = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, epochs=3))
    with pytest.raises(StageFailed, match="became (nan|inf)"):
        CellPipeline(config, StageStore(tmp_path), LocalExecutor(), log=lambda s: None).run()
