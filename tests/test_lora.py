"""LoRA (seal_ray/lora.py) on a tiny Llama saved with save_pretrained: what trains, what is shared, what resumes.

Invariants: a LoRA run changes adapter weights only (every base tensor bit-identical); Algorithm 1's
theta_hat is a second adapter on the same base and trains; Algorithm 2 has no second adapter; a run
killed mid-way and resumed from its checkpoint equals an uninterrupted run; gradient checkpointing
does not change Algorithm 1's result (theta_hat's recompute runs with its own adapter).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seal_ray.batching import encode_rows
from seal_ray.checkpoints import Checkpointer
from seal_ray.config import LoraConfig, PenaltyConfig, load_cell_config, to_dict
from seal_ray.distributed import LocalDist
from seal_ray.errors import StageFailed
from seal_ray.lora import AUX_ADAPTER, AdapterView, add_aux_adapter, add_lora
from seal_ray.models import enable_gradient_checkpointing, load_tokenizer
from seal_ray.schedules import PenaltySchedule
from seal_ray.selector import init_logits
from seal_ray.train_loop import LoopStats, SelectorSetup, train_selector, train_sft
from tiny_hf import make_tiny_llama

TEMPLATE = "Human: {}\nAssistant: "
ROWS = [{"id": n, "prompt": f"question {n}", "response": f"answer {n * 7}"} for n in range(8)]
SAFE = [{"id": n, "prompt": f"question {n}", "response": "sorry, no."} for n in range(4)]
QUIET = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    make_tiny_llama(directory)
    return directory


def _lora_model(directory: Path, r: int = 4, gradient_checkpointing: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory))
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    torch.manual_seed(0)  # the adapters' random init
    return add_lora(model, LoraConfig(r=r, alpha=8))


def _encoded(directory: Path):
    tokenizer = load_tokenizer(directory)
    return tokenizer, encode_rows(ROWS, tokenizer, TEMPLATE, 64), encode_rows(SAFE, tokenizer, TEMPLATE, 64)


def _sft(model, directory: Path, checkpointer: Checkpointer, epochs: int = 3) -> LoopStats:
    tokenizer, encoded, _ = _encoded(directory)
    return train_sft(model, encoded, sorted(encoded), stage="finetune", epochs=epochs, lr=1e-2, batch_size=4, seed=0,
                     pad_id=tokenizer.pad_token_id, dist=LocalDist(), checkpointer=checkpointer, **QUIET)


def _selector(model, aux, directory: Path, checkpointer: Checkpointer, algorithm: int = 1):
    tokenizer, encoded, encoded_safe = _encoded(directory)
    setup = SelectorSetup(activation="softmax", algorithm=algorithm, lr=5e-2, betas=(0.9, 0.95), epochs=3, model_lr=1e-2,
                          aux_lr=1e-2, batch_size=4, schedule=PenaltySchedule.from_config(PenaltyConfig()))
    return train_selector(model, aux, init_logits(len(ROWS), "softmax"), encoded, encoded_safe, setup=setup, seed=0,
                          pad_id=tokenizer.pad_token_id, dist=LocalDist(), checkpointer=checkpointer, **QUIET)


def _changed(before: dict, model) -> set[str]:
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


def test_lora_fine_tuning_changes_only_the_adapter_weights(tiny_llama):
    model = _lora_model(tiny_llama, r=16)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert {name.split(".")[-4] for name in trainable if "lora_A" in name} == {"q_proj", "v_proj"}  # SEAL.md defaults

    _sft(model, tiny_llama, Checkpointer(None), epochs=2)

    changed = _changed(before, model)
    assert any("lora_B" in name for name in changed), "the adapters did not train"
    assert changed <= trainable  # every base tensor is bit-identical


def test_algorithm_1_trains_theta_hat_as_a_second_adapter_on_the_same_frozen_base(tiny_llama):
    model = _lora_model(tiny_llama)
    base_count = sum(p.numel() for p in model.get_base_model().parameters() if not p.requires_grad)
    theta_count = sum(p.numel() for p in model.parameters()) - base_count
    aux = add_aux_adapter(model)
    # One base in memory: the second adapter adds exactly one adapter's weights, not a copy of the base.
    assert sum(p.numel() for p in model.parameters()) == base_count + 2 * theta_count
    assert set(model.peft_config) == {"default", AUX_ADAPTER} and model.active_adapter == "default"
    assert sum(p.numel() for p in aux.parameters()) == theta_count
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    logits, _ = _selector(model, aux, tiny_llama, Checkpointer(None))

    changed = _changed(before, model)
    assert changed and all("lora_" in name for name in changed)  # the base is frozen
    assert any(".default." in name and "lora_B" in name for name in changed)  # theta trained
    assert any(f".{AUX_ADAPTER}." in name and "lora_B" in name for name in changed)  # theta_hat trained
    after = dict(model.named_parameters())
    theta_b = [n for n in after if ".default." in n and "lora_B" in n]
    assert any(not torch.equal(after[n], after[n.replace(".default.", f".{AUX_ADAPTER}.")]) for n in theta_b)
    assert model.active_adapter == "default"  # theta's adapter is active again after training
    assert not torch.equal(logits, init_logits(len(ROWS), "softmax"))  # omega moved on l(theta) - l(theta_hat)


@pytest.mark.parametrize("algorithm", [1, 2])
def test_the_selector_stage_gives_algorithm_1_a_second_adapter_and_algorithm_2_none(tmp_path, tiny_llama, monkeypatch, algorithm):
    from seal_ray.models import write_model_ref
    from seal_ray.stages import data, selector

    config = load_cell_config(None, [
        "world.n_ft=12", "world.n_base=10", "world.safe_pool=6", "world.n_test_hh=2", "world.n_test_orca=1",
        "world.hexphi_per_category=1", f"model.name_or_path={tiny_llama}", "model.lora.enabled=true",
        f"selector.algorithm={algorithm}", "resources.isolate_stages=false",
    ])
    data.run(config, tmp_path)
    write_model_ref(tmp_path / "base" / "model", str(tiny_llama))
    seen = {}

    def spy(model, aux_model, logits, *args, **kwargs):
        seen.update(adapters=set(model.peft_config), aux=aux_model, trainable=sum(p.requires_grad for p in model.parameters()))
        return logits, LoopStats()

    monkeypatch.setattr(selector, "train_selector", spy)
    spec = {"config": to_dict(config), "work_dir": str(tmp_path / "work"), "data_dir": str(tmp_path),
            "base_dir": str(tmp_path / "base")}
    (tmp_path / "work").mkdir()
    selector.worker(spec, LocalDist(), Checkpointer(None), lambda s: None)
    if algorithm == 1:
        assert seen["adapters"] == {"default", AUX_ADAPTER} and isinstance(seen["aux"], AdapterView)
    else:
        assert seen["adapters"] == {"default"} and seen["aux"] is None
    assert seen["trainable"] == 2 * 2 * 2  # theta's adapter only: lora_A and lora_B on q_proj, v_proj, 2 layers


def test_a_lora_fine_tune_resumed_from_its_checkpoint_equals_an_uninterrupted_run(tmp_path, tiny_llama, monkeypatch):
    uninterrupted = _lora_model(tiny_llama)
    _sft(uninterrupted, tiny_llama, Checkpointer(None))

    monkeypatch.setenv("SEAL_RAY_FAULT", "finetune@2.0=raise")
    with pytest.raises(StageFailed, match="injected fault"):
        _sft(_lora_model(tiny_llama), tiny_llama, Checkpointer(tmp_path))
    monkeypatch.delenv("SEAL_RAY_FAULT")
    checkpoint = torch.load(next(tmp_path.glob("epoch_*.pt")), weights_only=True)
    assert checkpoint["model"] and all("lora_" in name for name in checkpoint["model"])  # adapters only, no base copy

    resumed = _lora_model(tiny_llama)
    stats = _sft(resumed, tiny_llama, Checkpointer(tmp_path))
    assert stats.resumed_from_epoch == 2
    expected = dict(uninterrupted.named_parameters())
    for name, p in resumed.named_parameters():
        assert torch.equal(p, expected[name]), name


def test_an_algorithm_1_lora_selector_resumed_from_its_checkpoint_equals_an_uninterrupted_run(tmp_path, tiny_llama, monkeypatch):
    model = _lora_model(tiny_llama)
    expected_logits, _ = _selector(model, add_aux_adapter(model), tiny_llama, Checkpointer(None))
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}

    monkeypatch.setenv("SEAL_RAY_FAULT", "selector@1.1=raise")
    interrupted = _lora_model(tiny_llama)
    with pytest.raises(StageFailed, match="injected fault"):
        _selector(interrupted, add_aux_adapter(interrupted), tiny_llama, Checkpointer(tmp_path))
    monkeypatch.delenv("SEAL_RAY_FAULT")

    resumed = _lora_model(tiny_llama)
    logits, stats = _selector(resumed, add_aux_adapter(resumed), tiny_llama, Checkpointer(tmp_path))
    assert stats.resumed_from_epoch == 1
    assert torch.equal(logits, expected_logits)
    for name, p in resumed.named_parameters():
        assert torch.equal(p, expected[name]), name


def test_gradient_checkpointing_does_not_change_algorithm_1_with_two_adapters(tiny_llama):
    results = []
    for checkpointing in (False, True):
        model = _lora_model(tiny_llama, gradient_checkpointing=checkpointing)
        logits, _ = _selector(model, add_aux_adapter(model), tiny_llama, Checkpointer(None))
        results.append((logits, {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}))
    (plain_logits, plain), (ckpt_logits, ckpt) = results
    torch.testing.assert_close(ckpt_logits, plain_logits, rtol=0, atol=1e-6)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_theta_hat_trains_with_thetas_optimiser_settings(tiny_llama, monkeypatch):
    """Algorithm 1's theta_hat is a second copy of theta (SEAL.md): its AdamW takes theta's betas
    (selector.model_betas), at its own learning rate (selector.aux_lr)."""
    made = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            made.append(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    model = _lora_model(tiny_llama)
    aux = add_aux_adapter(model)
    tokenizer, encoded, encoded_safe = _encoded(tiny_llama)
    setup = SelectorSetup(activation="softmax", algorithm=1, lr=5e-2, betas=(0.9, 0.95), epochs=1, model_lr=1e-2,
                          aux_lr=3e-3, batch_size=4, schedule=PenaltySchedule.from_config(PenaltyConfig()),
                          model_betas=(0.8, 0.9))
    train_selector(model, aux, init_logits(len(ROWS), "softmax"), encoded, encoded_safe, setup=setup, seed=0,
                   pad_id=tokenizer.pad_token_id, dist=LocalDist(), checkpointer=Checkpointer(None), **QUIET)
    assert [(m["lr"], tuple(m["betas"])) for m in made] == [(1e-2, (0.8, 0.9)), (3e-3, (0.8, 0.9))]
