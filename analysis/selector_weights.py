"""A cell's selector weights and the ground-truth label of each fine-tuning row, read from its artifacts.

The selector file holds logits (1-D float32, torch.save); the weights the lower level trains with are
p(omega) of SEAL.md's activation table, recomputed here in numpy so analysis needs no seal_ray import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from analysis.ablations import ACTIVATION, is_missing

SELECTOR_PATH = "artifact/selector_path"
LABELS_PATH = "artifact/labels_path"
LABELS = ("clean", "unsafe", "low_quality")


def selector_weights(logits: np.ndarray, activation: str) -> np.ndarray:
    """p(omega): N * softmax (weights average 1), 2 * sigmoid (1 at init) or relu (SEAL.md, Selector)."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "softmax":
        shifted = np.exp(logits - logits.max())  # shift by the max: exp would overflow on large logits
        return len(logits) * shifted / shifted.sum()
    if activation == "sigmoid":
        return 2.0 / (1.0 + np.exp(-logits))
    if activation == "relu":
        return np.maximum(logits, 0.0)
    raise ValueError(f"unknown selector activation '{activation}' (known: softmax, sigmoid, relu)")


def load_logits(path: str | Path) -> np.ndarray:
    import torch  # only this helper needs torch; tables and plots do not

    tensor = torch.load(path, map_location="cpu", weights_only=True)
    return tensor.detach().to(torch.float64).reshape(-1).numpy()


def load_selector_weights(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(weights, labels) of one results row, checked to be indexed alike."""
    selector_path, labels_path = row.get(SELECTOR_PATH), row.get(LABELS_PATH)
    if is_missing(selector_path) or is_missing(labels_path) or not selector_path or not labels_path:
        raise ValueError(f"row {row.get('label')} seed {row.get('seed')} has no {SELECTOR_PATH} / {LABELS_PATH}")
    activation = row.get(ACTIVATION)
    weights = selector_weights(load_logits(selector_path), "softmax" if is_missing(activation) else str(activation))
    labels = np.asarray(json.loads(Path(labels_path).read_text()), dtype=object)
    if len(weights) != len(labels):
        # The reference code's selectors are shorter than their data set (SEAL.md): refuse to misalign them.
        raise ValueError(f"{selector_path} has {len(weights)} logits but {labels_path} has {len(labels)} labels; "
                         "they must be indexed alike")
    return weights, labels
