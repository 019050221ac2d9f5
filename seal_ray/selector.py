"""The SEAL selector: one free logit per fine-tuning sample, its weights, top-p selection, files.

SEAL.md, "Selector": weights p(omega) per activation, and the inits of omega.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch

from seal_ray.errors import UserError
from seal_ray.registry import Registry

ACTIVATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("selector activation")

# SEAL.md table: the init of omega for each activation.
DEFAULT_INIT = {"softmax": 0.1, "sigmoid": -1e-4, "relu": 1.0}

# A row that cannot be trained on (over-long, or an empty prompt or response) has no logit. A selector
# file still has one entry per stable id; such a row's entry is -inf: weight 0 under every activation
# (exp, sigmoid and relu of -inf are 0), and it is left out of the softmax normaliser, of top-p and of AUROC.
NO_LOGIT = float("-inf")


@ACTIVATIONS.register("softmax")
def softmax_weights(logits: torch.Tensor) -> torch.Tensor:
    # N * softmax: weights average 1, and the normalisation term moves every logit each step.
    return logits.numel() * torch.softmax(logits, dim=0)


@ACTIVATIONS.register("sigmoid")
def sigmoid_weights(logits: torch.Tensor) -> torch.Tensor:
    # 2 * sigmoid: weight ~1 at the init -1e-4; only in-batch logits get a gradient.
    return 2.0 * torch.sigmoid(logits)


@ACTIVATIONS.register("relu")
def relu_weights(logits: torch.Tensor) -> torch.Tensor:
    # Not in the paper: a logit reaching 0 gets weight 0 and no gradient, a hard irreversible drop.
    return torch.relu(logits)


def selector_weights(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """p(omega) for all N samples (differentiable in `logits`)."""
    return ACTIVATIONS.get(activation)(logits)


def init_logits(n: int, activation: str, init: float | None = None) -> torch.Tensor:
    ACTIVATIONS.get(activation)
    value = DEFAULT_INIT[activation] if init is None else init
    return torch.full((n,), float(value), dtype=torch.float32)


def keep_count(n: int, topp: float) -> int:
    # floor(topp * N); the epsilon keeps 0.8 * 111900 from flooring to 89519 by rounding error.
    return int(math.floor(topp * n + 1e-9))


def top_p_ids(logits: torch.Tensor, ids: Sequence[int], topp: float, count: int | None = None) -> list[int]:
    """The k = floor(topp * N) ids (or `count`, a budget fixed elsewhere) with the largest logits; ties go to
    the smaller id. Sorted ascending."""
    if logits.ndim != 1 or logits.numel() != len(ids):
        raise ValueError(f"{logits.numel()} logits for {len(ids)} ids")
    id_tensor = torch.as_tensor(list(ids), dtype=torch.long)
    by_id = torch.argsort(id_tensor, stable=True)
    # A stable sort on -logit after ordering by id puts the smaller id first among equal logits.
    order = by_id[torch.argsort(-logits[by_id].double(), stable=True)]
    kept = id_tensor[order[: keep_count(len(ids), topp) if count is None else count]]
    return sorted(kept.tolist())


def has_logit(logits: torch.Tensor) -> torch.Tensor:
    """Mask of the entries that are logits (not NO_LOGIT)."""
    return ~torch.isneginf(logits)


def expand_logits(trained: torch.Tensor, ids: Sequence[int], n: int) -> torch.Tensor:
    """One entry per stable id 0..n-1: the trained logit of each id in `ids` (in that order), NO_LOGIT elsewhere."""
    full = torch.full((n,), NO_LOGIT, dtype=torch.float32)
    full[torch.as_tensor(list(ids), dtype=torch.long)] = trained.detach().to("cpu", torch.float32)
    return full


def top_p_of_file(logits: torch.Tensor, row_ids: Sequence[int], topp: float) -> list[int]:
    """Top-p row ids of a selector file whose entry k is the logit of row `row_ids[k]`; NO_LOGIT entries take no part."""
    if logits.numel() != len(row_ids):
        raise ValueError(f"{logits.numel()} logits for {len(row_ids)} row ids")
    positions = has_logit(logits).nonzero().flatten()
    return top_p_ids(logits[positions], [row_ids[k] for k in positions.tolist()], topp)


def save_selector(logits: torch.Tensor, path: str | Path) -> None:
    """The official format: a 1-D float32 CPU tensor written with torch.save."""
    tensor = logits.detach().to("cpu", torch.float32).contiguous().clone()
    torch.save(tensor, str(path))


def load_selector(path: str | Path, expected_len: int | None = None) -> torch.Tensor:
    """Read a selector file safely (weights_only: a pickle payload is refused, never run) and check it:
    any file that is not a 1-D float tensor of finite logits is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"selector file {path}: no such file")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the unpickler raises anything (KeyError on a text file)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"selector file {path}: not a tensor file loadable with weights_only=True "
            f"(a 1-D float32 tensor written with torch.save; pickled objects are refused): {first}"
        ) from None
    return _checked_logits(loaded, path, expected_len)


def _checked_logits(loaded: object, path: Path, expected_len: int | None) -> torch.Tensor:
    if not isinstance(loaded, torch.Tensor):
        raise UserError(f"selector file {path}: expected a 1-D float tensor, found {type(loaded).__name__}")
    if loaded.ndim != 1:
        raise UserError(f"selector file {path}: expected a 1-D tensor, found shape {tuple(loaded.shape)}")
    if not loaded.is_floating_point():
        raise UserError(f"selector file {path}: expected float32 logits, found dtype {loaded.dtype}")
    if expected_len is not None and loaded.numel() != expected_len:
        raise UserError(f"selector file {path}: {loaded.numel()} logits for a dataset of {expected_len} rows")
    # NO_LOGIT (-inf) marks a row that has no logit (never trained on, never selected); NaN and +inf are refused.
    usable = torch.isfinite(loaded) | (loaded == NO_LOGIT)
    if not bool(usable.all()):
        bad = (~usable).nonzero().flatten()
        raise UserError(f"selector file {path}: {bad.numel()} logit(s) are NaN or +infinite (first at position "
                        f"{int(bad[0])}); a top-p selection over them would be arbitrary (-inf marks a row with no logit)")
    return loaded.detach().to(torch.float32)


def length_warning(selector_len: int, dataset_len: int) -> str | None:
    """The reference code's index shift (SEAL.md): a selector sized after length filtering."""
    if selector_len == dataset_len:
        return None
    return (
        f"the selector has {selector_len} logits but the dataset has {dataset_len} rows: the reference "
        "code indexes its selector after length filtering, so its positions are not row ids (every one after "
        "the first dropped row is shifted); give --dataset and --tokenizer to map them to row ids"
    )
