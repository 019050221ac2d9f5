"""LoRA through peft: adapters on a frozen base (SEAL.md defaults r=16, alpha=16 on q_proj, v_proj)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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


AUX_ADAPTER = "theta_hat"


class AdapterView(torch.nn.Module):
    """One named adapter of a peft model, seen as a model of its own.

    Algorithm 1's theta_hat (SEAL.md) as a second LoRA adapter on the same frozen base as theta: a
    forward runs the shared base with this adapter active (then restores the previous one), and
    parameters / state_dict cover this adapter's weights only, so theta_hat gets its own optimiser
    and checkpoint entry while the base weights exist once in memory.
    """

    def __init__(self, peft_model: torch.nn.Module, adapter: str):
        super().__init__()
        self.__dict__["peft_model"] = peft_model  # not a submodule: the base and theta stay theta's model's
        self.adapter = adapter

    def _own(self) -> list[tuple[str, torch.nn.Parameter]]:
        marker = f".{self.adapter}."
        return [(name, p) for name, p in self.peft_model.named_parameters() if marker in name]

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._own()

    def parameters(self, recurse: bool = True):
        for _, p in self._own():
            yield p

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """This adapter's weights, trained whichever adapter is active (peft flags only the active one)."""
        return [p for _, p in self._own()]

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self._own()}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        with torch.no_grad():
            for name, p in self._own():
                p.copy_(state[name])

    def train(self, mode: bool = True) -> "AdapterView":
        self.peft_model.train(mode)
        return self

    @contextmanager
    def active(self) -> Iterator[None]:
        """This adapter active in the shared model, the previous one restored on exit.

        The backward of theta_hat's loss must run inside this too: gradient checkpointing recomputes
        the forward during backward, and a recompute with theta's adapter active would compute (and
        send) theta_hat's gradients through theta's weights.
        """
        previous = self.peft_model.active_adapter
        self.peft_model.set_adapter(self.adapter)
        _keep_trainable(self.peft_model)
        try:
            yield
        finally:
            self.peft_model.set_adapter(previous)
            _keep_trainable(self.peft_model)

    def forward(self, **inputs):
        with self.active():
            return self.peft_model(**inputs)


def _keep_trainable(peft_model: torch.nn.Module) -> None:
    """peft's set_adapter freezes every inactive adapter; a frozen leaf drops the gradient of a graph
    recorded before the switch, so both adapters stay trainable (an inactive one simply is not used)."""
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)


def add_aux_adapter(peft_model: torch.nn.Module) -> AdapterView:
    """Add theta_hat as a second adapter (same LoRA config) on `peft_model`'s base; theta stays active."""
    active = peft_model.active_adapter
    peft_model.add_adapter(AUX_ADAPTER, peft_model.peft_config[active])
    view = AdapterView(peft_model, AUX_ADAPTER)
    # Start theta_hat where theta starts (SEAL.md: theta_hat is initialised like theta).
    with torch.no_grad():
        own = dict(peft_model.named_parameters())
        for name, p in view.named_parameters():
            p.copy_(own[name.replace(f".{AUX_ADAPTER}.", f".{active}.")])
    peft_model.set_adapter(active)
    return view


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a training checkpoint must hold of `model`: everything, or under LoRA only the trainable
    tensors (the adapters) -- an epoch checkpoint of an 8B model must not rewrite 16 GB of frozen base."""
    state = model.state_dict()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if all(p.requires_grad for p in model.parameters()):
        return state
    return {name: tensor for name, tensor in state.items() if name in trainable or ".lora_" in name}


def load_trained_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of `trained_state`: a partial state may leave out frozen weights only."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lost = [name for name in missing if name in trainable]
    if lost or unexpected:
        raise ValueError(f"the checkpoint does not fit the model: trainable weights missing {lost[:3]}, "
                         f"unexpected {list(unexpected)[:3]}")
