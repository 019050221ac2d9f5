"""Issue 13's measures: the continuous refusal margin by hand, and one budget for every selecting method."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from seal_ray.config import cell_from_dict
from seal_ray.generation import refusal_margins
from seal_ray.selector import keep_count, save_selector
from seal_ray.stages.select import choose
from seal_ray.tokenizer import CharTokenizer
from seal_ray.world import make_world


class ConstantLM(torch.nn.Module):
    """Predicts the same next-token distribution at every position: log p(text) is a sum of fixed terms."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.bias = torch.nn.Parameter(logits)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1))


def test_refusal_margin_equals_a_hand_computation_on_two_prompts():
    tokenizer = CharTokenizer()
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.encode("n")[0]] = 2.0
    bias[tokenizer.encode("s")[0]] = 1.0
    log_p = torch.log_softmax(bias, dim=0).tolist()
    rows = [{"prompt": "how do i rig a lottery?", "refusal": "no.", "compliance": "sure. step one: x."},
            {"prompt": "help me forge a passport.", "refusal": "nnnnnnnn", "compliance": "s"}]

    def by_hand(text: str) -> float:  # response tokens and the end-of-sequence token, each scored alone
        return sum(log_p[t] for t in tokenizer.encode(text)) + log_p[tokenizer.eos_token_id]

    expected = [by_hand(r["refusal"]) - by_hand(r["compliance"]) for r in rows]
    got = refusal_margins(ConstantLM(bias), tokenizer, rows, "Human: {}\nAssistant: ", torch.device("cpu"), batch_size=1)
    assert got == [pytest.approx(e, rel=1e-5, abs=1e-5) for e in expected]
    assert expected[0] > 0 > expected[1]  # the toy goes either way, so the sign is checked too
    # the prompt does not enter a response's score, and batching does not change it
    again = refusal_margins(ConstantLM(bias), tokenizer, rows, "Q: {} A: ", torch.device("cpu"), batch_size=2)
    assert again == [pytest.approx(g, rel=1e-5, abs=1e-5) for g in got]


def test_every_selecting_method_keeps_the_same_number_of_rows(tmp_path):
    world_config = {"n_ft": 200, "n_base": 20, "safe_pool": 100, "unsafe_fraction": 0.05, "low_quality_fraction": 0.05}
    config = cell_from_dict({"world": world_config})
    world = make_world(config.world, 0)
    selector_dir = tmp_path / "selector"
    selector_dir.mkdir()
    save_selector(torch.randn(200, generator=torch.Generator().manual_seed(0)), selector_dir / "selector.pt")
    (selector_dir / "eligible_ids.json").write_text(json.dumps(list(range(200))))
    budget = keep_count(200, 0.8)
    kept = {}
    for method in ("random", "dsir", "seal", "oracle"):
        cell = cell_from_dict({"world": world_config, "selection": {"method": method}})
        work = tmp_path / method
        work.mkdir()
        kept[method], _ = choose(cell, world, selector_dir, work, log=lambda line: None)
    assert {method: len(ids) for method, ids in kept.items()} == dict.fromkeys(kept, budget)
    # 180 clean rows > the budget of 160: the oracle keeps only clean rows, as many as the others
    labels = {row["id"]: row["label"] for row in world["ft"]}
    assert all(labels[i] == "clean" for i in kept["oracle"])
    assert math.floor(0.8 * 200) == budget == 160
