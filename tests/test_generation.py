"""Batched generation (seal_ray/generation.py) with a real Hugging Face tokenizer and a tiny Llama.

Left padding must not change an answer; the chat template must reach the prompt; the decoding
settings of the config (SEAL.md: top_p 0.9, temperature 1.0, repetition penalty 1.2) must reach
`model.generate`; an answer ends at any of the model's stop tokens.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seal_ray.batching import encode_prompt, encode_rows
from seal_ray.config import GenerationConfig, load_cell_config
from seal_ray.errors import ConfigError
from seal_ray.generation import _left_padded, generate_batch, stop_token_ids
from seal_ray.models import load_tokenizer
from tiny_hf import make_tiny_llama

TEMPLATE = "Human: {}\nAssistant: "
PROMPTS = ["hi", "how do I bake bread?", "a much longer prompt than the first one, with more words in it"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    make_tiny_llama(directory)
    return directory


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval(), load_tokenizer(tiny_llama)


def test_prompts_are_left_padded_with_the_pad_token_and_masked():
    input_ids, attention = _left_padded([[5, 6, 7], [8]], pad_id=0, device=CPU)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("template", [TEMPLATE, "chat"])
def test_a_prompts_greedy_answer_is_the_same_alone_and_in_a_batch_of_other_lengths(model_and_tokenizer, template):
    model, tokenizer = model_and_tokenizer
    assert len({len(encode_prompt(tokenizer, p, template)) for p in PROMPTS}) == len(PROMPTS)
    config = GenerationConfig(max_new_tokens=6)
    together = generate_batch(model, tokenizer, PROMPTS, template, config, CPU, min_new_tokens=6)
    alone = [generate_batch(model, tokenizer, [p], template, config, CPU, min_new_tokens=6)[0] for p in PROMPTS]
    assert together == alone
    assert all(isinstance(answer, str) and answer for answer in together)


def test_the_chat_template_encodes_prompts_for_training_and_generation(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    ids = encode_prompt(tokenizer, "hi there", "chat")
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|user|>hi there</s><|assistant|>"
    plain = encode_prompt(tokenizer, "hi there", TEMPLATE)
    assert tokenizer.decode(plain, skip_special_tokens=False) == "<s>Human: hi there\nAssistant: "
    encoded = encode_rows([{"id": 3, "prompt": "hi there", "response": "hello"}], tokenizer, "chat", 64)
    assert list(encoded[3].prompt_ids) == ids
    assert encoded[3].response_ids[-1] == tokenizer.eos_token_id


def test_chat_is_a_config_error_for_the_mini_models_character_tokenizer(tiny_llama):
    with pytest.raises(ConfigError, match="data.template.*no chat template"):
        load_cell_config(None, ["data.template=chat"])
    assert load_cell_config(None, ["data.template=chat", f"model.name_or_path={tiny_llama}"]).data.template == "chat"


class _RecordingModel:
    """Stands in for a causal LM: records the generate() arguments, answers with fixed tokens."""

    def __init__(self, answer: list[int], eos_token_id=None):
        self.answer, self.calls = answer, []
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)

    def generate(self, input_ids, **kwargs):
        self.calls.append(kwargs)
        return torch.cat([input_ids, torch.tensor([self.answer] * len(input_ids))], dim=1)


def test_the_papers_sampling_settings_reach_model_generate(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    model = _RecordingModel(tokenizer.encode("ok"))
    paper = GenerationConfig(max_new_tokens=7, do_sample=True, top_p=0.9, temperature=1.0, repetition_penalty=1.2)
    generate_batch(model, tokenizer, PROMPTS, TEMPLATE, paper, CPU)
    call = model.calls[-1]
    assert {k: call[k] for k in ("do_sample", "top_p", "temperature", "repetition_penalty", "max_new_tokens")} == dict(
        do_sample=True, top_p=0.9, temperature=1.0, repetition_penalty=1.2, max_new_tokens=7)
    assert call["pad_token_id"] == tokenizer.pad_token_id and call["attention_mask"].shape[0] == len(PROMPTS)

    generate_batch(model, tokenizer, PROMPTS[:1], TEMPLATE, GenerationConfig(max_new_tokens=3), CPU)
    greedy = model.calls[-1]
    assert greedy["do_sample"] is False and "top_p" not in greedy and "temperature" not in greedy


def test_an_answer_ends_at_any_stop_token_of_the_model_not_only_the_tokenizers_eos(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    # Llama-3-Instruct's generation config lists <|eot_id|> beside the tokenizer's eos; here "<s>" plays that part.
    end_of_turn = tokenizer.bos_token_id
    model = _RecordingModel(tokenizer.encode("yes") + [end_of_turn] + tokenizer.encode("junk"),
                            eos_token_id=[tokenizer.eos_token_id, end_of_turn])
    assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, end_of_turn]
    assert generate_batch(model, tokenizer, ["hi"], TEMPLATE, GenerationConfig(), CPU) == ["yes"]
    assert model.calls[-1]["eos_token_id"] == [tokenizer.eos_token_id, end_of_turn]
