"""Models and tokenizers: the mini world's tiny Llama, or any transformers causal LM by name or path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

# Per-stage model loads would otherwise print progress bars into every cell's log.
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

from seal_ray.config import ModelConfig
from seal_ray.tokenizer import CharTokenizer

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFTokenizer:
    """The small tokenizer surface the pipeline uses, over a transformers tokenizer."""

    def __init__(self, tokenizer: Any):
        self.inner = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.inner(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.inner.decode(ids, skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory: str | Path) -> None:
        self.inner.save_pretrained(str(directory))


def build_mini_model(config: ModelConfig, tokenizer: CharTokenizer, seed: int, max_positions: int = 256) -> LlamaForCausalLM:
    """The mini world's causal LM: a tiny Llama, so the real path's LoRA targets (q_proj, v_proj) exist."""
    torch.manual_seed(seed)
    llama = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.hidden_size * 2,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(llama)


def load_tokenizer(path: str | Path):
    if CharTokenizer.is_saved_in(path):
        return CharTokenizer.from_pretrained(path)
    from transformers import AutoTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(str(path)))


def load_model(path: str | Path, config: ModelConfig, device: torch.device | str = "cpu"):
    """(model, tokenizer) from a directory written by `save_model`, or a hub id."""
    dtype = _DTYPES.get(config.dtype, "auto") if config.dtype != "auto" else "auto"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, load_tokenizer(path)


def save_model(model: torch.nn.Module, tokenizer: Any, directory: str | Path) -> None:
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(directory)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
