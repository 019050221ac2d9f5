"""Models and tokenizers: the mini world's tiny Llama, or any transformers causal LM by name or path.

A stage's model folder holds one of three things, and `load_model` reads each:
- a whole model written by `save_model` (the mini world's base model, a fully fine-tuned model);
- `model_ref.json` only: a reference to a hub id or a local directory (the `base` stage of a pretrained
  model copies no weights, so an 8B base costs a few bytes of cache);
- a LoRA adapter (`adapter_config.json`, the adapter weights, the tokenizer) plus `model_ref.json`
  naming the base it sits on (the `finetune` stage with `model.lora.enabled`).
"""

from __future__ import annotations

import json
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
REF_FILE = "model_ref.json"
ADAPTER_FILE = "adapter_config.json"


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

    def chat_prompt_ids(self, prompt: str) -> list[int]:
        """The prompt as one user turn of the tokenizer's chat template, ending with the assistant's header."""
        if not getattr(self.inner, "chat_template", None):
            from seal_ray.errors import UserError

            raise UserError(f"data.template 'chat': the tokenizer of {self.inner.name_or_path} has no chat template; "
                            "use a format string such as 'Human: {}\nAssistant: '")
        text = self.inner.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return self.inner(text, add_special_tokens=False)["input_ids"]

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


def write_model_ref(directory: str | Path, name_or_path: str) -> None:
    """Point a stage's model folder at weights that live elsewhere (a hub id or a local directory)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / REF_FILE).write_text(json.dumps({"name_or_path": str(name_or_path)}))


def referenced(path: str | Path) -> str:
    """The hub id or directory a model folder refers to; the folder itself when it holds a whole model."""
    ref = Path(path) / REF_FILE
    return json.loads(ref.read_text())["name_or_path"] if ref.is_file() else str(path)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_FILE).is_file()


def load_tokenizer(path: str | Path):
    if CharTokenizer.is_saved_in(path):
        return CharTokenizer.from_pretrained(path)
    from transformers import AutoTokenizer

    source = path if is_adapter(path) else referenced(path)
    if CharTokenizer.is_saved_in(source):
        return CharTokenizer.from_pretrained(source)
    return HFTokenizer(AutoTokenizer.from_pretrained(str(source)))


def load_model(path: str | Path, config: ModelConfig, device: torch.device | str = "cpu", *, merge: bool = False):
    """(model, tokenizer) from a stage's model folder (whole model, reference or LoRA adapter) or a hub id.

    A LoRA folder loads its base and the adapter on it; `merge` folds the adapter into the base weights
    (for generation: same outputs, no adapter overhead).
    """
    dtype = _DTYPES.get(config.dtype, "auto") if config.dtype != "auto" else "auto"
    model = AutoModelForCausalLM.from_pretrained(referenced(path), dtype=dtype)
    if is_adapter(path):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path))
        if merge:
            model = model.merge_and_unload()
    model = model.to(device)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, load_tokenizer(path)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in backward instead of storing them (model.gradient_checkpointing)."""
    # transformers 5 renamed the method; the old name still works there, with a warning.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # checkpointing with a frozen embedding (LoRA) needs grads on inputs


def save_model(model: torch.nn.Module, tokenizer: Any, directory: str | Path, *, base: str | None = None) -> None:
    """Write a whole model, or (a peft model) only its adapter with `base` recorded as what it sits on."""
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(directory)
    if is_adapter(directory):
        if base is None:
            raise ValueError("an adapter needs the base it sits on")
        write_model_ref(directory, base)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
