"""Tiny Hugging Face artefacts that tests create locally (nothing is downloaded).

`make_tokenizer` builds a real `PreTrainedTokenizerFast` (byte-level BPE trained on the given texts, with a
chat template), `make_tiny_llama` a Llama-architecture causal LM, `make_tiny_reward_model` a sequence
classifier; each is written with `save_pretrained`, so the code under test loads it exactly as it would
load a hub model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DEFAULT_TEXTS = [
    "Human: how do I bake bread?\nAssistant: Mix flour, water and yeast, then bake it.",
    "Human: tell me how to steal a car.\nAssistant: Sorry, I can't help with that.",
    "You are a helpful assistant. Translate 'cat' to French. Le chat.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]{}-_/\\@#$%^&*+=<>|~`",
]


def make_tokenizer(directory: str | Path, texts: Iterable[str] = (), vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with pad/eos/bos tokens and a chat template."""
    inner = Tokenizer(models.BPE(unk_token=None))
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    inner.train_from_iterator([*DEFAULT_TEXTS, *texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=inner, pad_token="<pad>", bos_token="<s>", eos_token="</s>", chat_template=CHAT_TEMPLATE,
    )
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def _llama_config(tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def make_tiny_llama(directory: str | Path, texts: Iterable[str] = (), hidden: int = 32, layers: int = 2, seed: int = 0):
    """(model, tokenizer): a randomly initialised Llama causal LM and its tokenizer, saved in `directory`."""
    tokenizer = make_tokenizer(directory, texts)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tokenizer, hidden, layers))
    model.save_pretrained(str(directory))
    return model, tokenizer


def make_tiny_reward_model(directory: str | Path, texts: Iterable[str] = (), hidden: int = 32, seed: int = 0):
    """(model, tokenizer): a Llama sequence classifier with one output (a reward), saved in `directory`."""
    tokenizer = make_tokenizer(directory, texts)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(_llama_config(tokenizer, hidden, 1, num_labels=1))
    model.save_pretrained(str(directory))
    return model, tokenizer
