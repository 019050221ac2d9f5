"""Packed training batches: several samples per row, the same per-sample losses and training as padded ones."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from seal_ray import train_loop
from seal_ray.batching import collate, collate_packed, encode_rows
from seal_ray.checkpoints import Checkpointer
from seal_ray.distributed import LocalDist
from seal_ray.losses import per_sample_loss
from seal_ray.tokenizer import CharTokenizer
from seal_ray.train_loop import Batcher, train_sft

TEMPLATE = "Human: {}\nAssistant: "


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    tokenizer = CharTokenizer()
    return LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id))


def encoded_rows(n: int) -> dict:
    rows = [{"id": i, "prompt": "repeat " + "ab" * (1 + i % 7), "response": "xy" * (1 + (i * 5) % 11)} for i in range(n)]
    return encode_rows(rows, CharTokenizer(), TEMPLATE, 128)


def test_packed_rows_hold_several_samples_and_little_padding():
    samples = list(encoded_rows(32).values())
    padded, packed = collate(samples, 0), collate_packed(samples, 0)
    real = sum(s.length for s in samples)
    assert packed["input_ids"].shape[0] < len(samples)
    assert 1 - real / packed["input_ids"].numel() < 0.15 < 1 - real / padded["input_ids"].numel()
    # every token of every sample sits in exactly one place, in order, with positions 0..n-1
    for i, s in enumerate(samples):
        where = packed["segments"] == i
        assert packed["input_ids"][where].tolist() == list(s.prompt_ids + s.response_ids)
        assert packed["position_ids"][where].tolist() == list(range(s.length))
        assert (packed["labels"][where] != -100).sum() == len(s.response_ids)


def test_packed_batches_give_every_sample_its_padded_loss_and_gradient():
    model = tiny_llama()
    samples = list(encoded_rows(12).values())
    grads = []
    for collate_fn in (collate, collate_packed):
        model.zero_grad()
        losses = per_sample_loss(model, collate_fn(samples, 0))
        losses.sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if collate_fn is collate:
            padded = losses.detach()
    assert torch.allclose(losses.detach(), padded, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))


class IgnoresPositions(torch.nn.Module):
    """A model that numbers tokens by their column: packed samples would see each other."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_a_model_that_ignores_positions_trains_on_padded_batches():
    encoded = encoded_rows(8)
    assert Batcher([tiny_llama()], encoded, 0, torch.device("cpu")).packed
    assert not Batcher([IgnoresPositions(tiny_llama())], encoded, 0, torch.device("cpu")).packed


def test_packed_training_follows_padded_training_up_to_float_order(monkeypatch):
    """Same samples per epoch, same losses and weights within 1e-5 over 2 epochs of 6 steps.

    Longer runs drift apart: at the default learning rates the training amplifies float-order differences
    (the same happens between two attention kernels of torch on padded batches), so a cell's final
    metrics are not bit-identical to an unpacked run's, only statistically equivalent."""
    encoded = encoded_rows(48)
    dist = LocalDist("cpu")
    runs = []
    for packed in (False, True):
        monkeypatch.setattr(train_loop, "_packing_preserves_losses", lambda *a, packed=packed: packed)
        model = tiny_llama()
        stats = train_sft(model, encoded, sorted(encoded), stage="t", epochs=2, lr=1e-3, batch_size=8, seed=0, pad_id=0, pack=True,
                          dist=dist, checkpointer=Checkpointer(None, dist), log=lambda s: None)
        runs.append((stats, [p.detach().clone() for p in model.parameters()]))
    (padded, w_padded), (packed, w_packed) = runs
    assert packed.samples == padded.samples == 2 * len(encoded) and packed.tokens == padded.tokens
    assert packed.computed_tokens < padded.computed_tokens
    assert all(abs(a - b) < 1e-5 for a, b in zip(packed.epoch_losses, padded.epoch_losses))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(w_packed, w_padded))


def test_every_training_stage_packs_by_default(tmp_path, tiny_config):
    """base.pack_batches and resources.pack_batches are on by default: base, selector and fine-tuning pack."""
    from seal_ray.executor import LocalExecutor
    from seal_ray.pipeline import CellPipeline
    from seal_ray.store import StageStore

    assert tiny_config.resources.pack_batches and tiny_config.base.pack_batches  # the defaults
    outcome = CellPipeline(tiny_config, StageStore(tmp_path), LocalExecutor(), log=lambda s: None).run()
    padding = {name: outcome.stages[name].meta["measure"]["padding_share"] for name in ("base", "selector", "finetune")}
    assert all(share < 0.15 for share in padding.values()), padding


def test_base_pack_batches_packs_the_base_stage_and_is_part_of_its_key(tmp_path, tiny_config):
    """base.pack_batches, not resources.pack_batches, decides the base stage's batches: a packed base is
    another draw of the world's base model, so it must not share a cache entry with a padded one."""
    import dataclasses

    from seal_ray.config import stable_hash
    from seal_ray.executor import LocalExecutor
    from seal_ray.pipeline import CellPipeline
    from seal_ray.stages import base, data
    from seal_ray.store import StageStore

    store, padding = StageStore(tmp_path / "s"), {}
    for pack in (False, True):
        config = dataclasses.replace(tiny_config, base=dataclasses.replace(tiny_config.base, pack_batches=pack))
        assert config.resources.pack_batches  # the other stages pack either way
        CellPipeline(config, store, LocalExecutor(), log=lambda s: None).base_generations()
        base_hash = stable_hash(base.key(config, stable_hash(data.key(config))))
        padding[pack] = (base_hash, store.meta("base", base_hash)["measure"]["padding_share"])
    (padded_hash, padded_share), (packed_hash, packed_share) = padding[False], padding[True]
    assert padded_hash != packed_hash
    assert packed_share < 0.15 < padded_share
