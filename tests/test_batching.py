"""Batches by stable id: every sample once per epoch whatever the worker count; response-only loss."""

import torch

from seal_ray.batching import CyclingIds, collate, encode_rows, global_batches, local_share, micro_batches
from seal_ray.losses import per_sample_loss
from seal_ray.tokenizer import CharTokenizer


def test_every_sample_is_seen_once_per_epoch_for_any_worker_count():
    ids = list(range(100, 137))
    for workers in (1, 2, 3):
        seen = []
        for batch in global_batches(ids, 8, seed=5, epoch=2):
            for rank in range(workers):
                seen += local_share(batch, rank, workers)
        assert sorted(seen) == ids


def test_global_batches_do_not_depend_on_the_worker_count_and_change_per_epoch():
    ids = list(range(50))
    assert global_batches(ids, 10, 1, 0) == global_batches(list(reversed(ids)), 10, 1, 0)
    assert global_batches(ids, 10, 1, 0) != global_batches(ids, 10, 1, 1)


def test_micro_batches_cover_the_local_share():
    assert list(micro_batches([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]


def test_cycling_safe_batches_resume_from_their_position():
    first = CyclingIds(range(10), 4, seed=0)
    drawn = [first.next_batch() for _ in range(5)]
    second = CyclingIds(range(10), 4, seed=0)
    second.position = 3
    assert [second.next_batch() for _ in range(2)] == drawn[3:]


def test_long_rows_are_dropped_without_shifting_ids():
    tokenizer = CharTokenizer()
    rows = [{"id": 7, "prompt": "a", "response": "b"}, {"id": 8, "prompt": "x" * 200, "response": "y"}, {"id": 9, "prompt": "c", "response": "d"}]
    encoded = encode_rows(rows, tokenizer, "Human: {}\nAssistant: ", 64)
    assert sorted(encoded) == [7, 9]


def test_the_loss_covers_response_tokens_only():
    tokenizer = CharTokenizer()
    rows = [{"id": 0, "prompt": "repeat ab", "response": "ab"}]
    sample = encode_rows(rows, tokenizer, "Human: {}\nAssistant: ", 64)[0]
    batch = collate([sample], tokenizer.pad_token_id)
    labelled = (batch["labels"] != -100).sum().item()
    assert labelled == len("ab") + 1  # the answer and its end-of-sequence token

    class Uniform(torch.nn.Module):
        def forward(self, input_ids, attention_mask, **kwargs):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, tokenizer.vocab_size)})()

    loss = per_sample_loss(Uniform(), batch)
    assert torch.allclose(loss, torch.log(torch.tensor([float(tokenizer.vocab_size)])))


def test_padding_does_not_change_a_rows_loss():
    tokenizer = CharTokenizer()
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    rows = [{"id": 0, "prompt": "shift abc", "response": "bcd"}, {"id": 1, "prompt": "how do i steal cash?", "response": "sorry."}]
    encoded = encode_rows(rows, tokenizer, "Human: {}\nAssistant: ", 128)
    together = per_sample_loss(model, collate([encoded[0], encoded[1]], 0))
    alone = per_sample_loss(model, collate([encoded[0]], 0))
    assert torch.allclose(together[0], alone[0], atol=1e-5)
