"""LoRA through peft: adapters on a frozen base (SEAL.md defaults r=16, alpha=16 on q_proj, v_proj)."""

from __future__ import annotations

import torch

from seal_ray.config import LoraConfig


def add_lora(model: torch.nn.Module, config: LoraConfig) -> torch.nn.Module:
    """`model` with trainable LoRA adapters on `config.target_modules`; every base weight frozen."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    peft_config = PeftLoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def adapter_names(model: torch.nn.Module) -> set[str]:
    """Names of the trainable parameters (the adapters' under LoRA)."""
    return {name for name, p in model.named_parameters() if p.requires_grad}
