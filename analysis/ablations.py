"""Which rows of a results DataFrame form an ablation, and how its cells are named.

An ablation is data: the config columns it varies (keys), the key values of its reference cell, and
columns pinned for every row (the four SEAL ablations only look at selection.method == seal). Its rows
are those whose other swept columns all hold the sweep's base value, so one function serves the four
ablations of SEAL.md, the main table and any study added later.

The base value of a swept column is its most common value over the cells: in a one-factor-at-a-time
sweep every other ablation runs at the base, so the base wins the count. Sweeps built around another
base pass `reference={column: value}`, which overrides both the base and the ablations' references.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

CONFIG = "config/"
METHOD = "config/selection.method"
SELECTOR_FILE = "config/selection.selector_file"
ACTIVATION = "config/selector.activation"
SAFE_FRACTION = "config/data.safe_fraction"
SAFE_FRACTION_UNIT = "config/data.safe_fraction_unit"
PENALTY_KIND = "config/penalty.kind"
PENALTY_GAMMA = "config/penalty.gamma"
PENALTY_DECAY = "config/penalty.decay"
ALGORITHM = "config/selector.algorithm"
SELECTOR_EPOCH = "config/selector.epoch"

# The seed is the replicate, never a swept factor (results.load copies it into the config columns too).
NOT_SWEPT = frozenset({"config/seed"})

KeyValues = Mapping[str, Any]


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    # numbers.Real also covers numpy scalars, which is what DataFrame cells hold.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def same_value(a: Any, b: Any) -> bool:
    """Config equality that treats None and NaN as one value and floats as equal up to rounding noise."""
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def matches(column: pd.Series, value: Any) -> pd.Series:
    return column.map(lambda cell: same_value(cell, value)).astype(bool)


def sort_value(value: Any) -> tuple:
    """A key that orders numbers numerically and puts them before strings, whatever the column mixes."""
    if is_missing(value):
        return (2, "")
    if _is_number(value):
        return (0, float(value))
    return (1, str(value))


def _natural_order(keys: KeyValues) -> tuple:
    return tuple(sort_value(v) for v in keys.values())


def _plain_label(keys: KeyValues) -> str:
    return ", ".join(_short(v) for v in keys.values())


def _short(value: Any) -> str:
    return f"{value:g}" if _is_number(value) else str(value)


@dataclass(frozen=True)
class Setting:
    """A config column a study's table names for its rows: a setting that changes what the study measures."""

    column: str
    name: str
    meanings: Mapping[str, str] = field(default_factory=dict)  # value -> what it means, for the note


@dataclass(frozen=True)
class Ablation:
    """One study: the config columns it varies and the key values of its reference cell."""

    name: str
    title: str
    row_header: str
    keys: tuple[str, ...]
    reference: Mapping[str, Any]
    require: Mapping[str, Any] = field(default_factory=dict)
    label: Callable[[KeyValues], str] = _plain_label
    order: Callable[[KeyValues], tuple] = _natural_order
    stated: tuple[Setting, ...] = ()  # named under the table, or per row where its rows differ


def _preferred(column: str, preference: Sequence[Any]) -> Callable[[KeyValues], tuple]:
    """Order by a listed preference (the paper's order), unlisted values after them in natural order."""
    def order(keys: KeyValues) -> tuple:
        value = keys.get(column)
        rank = next((i for i, p in enumerate(preference) if same_value(p, value)), len(preference))
        return (rank, sort_value(value))
    return order


METHOD_LABELS = {"sft": "Standard SFT", "random": "Random", "dsir": "DSIR", "safeinstr": "SafeInstr", "seal": "SEAL",
                 "seal_safeinstr": "SEAL + SafeInstr", "oracle": "Oracle (clean data)"}
SAFE_UNITS = {"ft_size": "D_ft", "safe_pool": "safe pool"}
ALGORITHM_LABELS = {1: "Alg. 1 (auxiliary model)", 2: "Alg. 2 (memory-efficient)"}


def method_label(keys: KeyValues) -> str:
    method = keys.get(METHOD)
    label = METHOD_LABELS.get(method, str(method))
    selector_file = keys.get(SELECTOR_FILE)
    return label if is_missing(selector_file) else f"{label} ({str(selector_file).rsplit('/', 1)[-1]})"


def safe_fraction_label(keys: KeyValues) -> str:
    fraction = keys.get(SAFE_FRACTION)
    unit = keys.get(SAFE_FRACTION_UNIT)
    size = f"{float(fraction) * 100:g}%" if _is_number(fraction) else str(fraction)
    return size if is_missing(unit) else f"{size} of {SAFE_UNITS.get(unit, unit)}"


def penalty_label(keys: KeyValues) -> str:
    # Only the parameter the schedule uses is shown: a ramp ignores gamma, a fixed penalty ignores decay.
    kind = keys.get(PENALTY_KIND)
    if kind == "fixed":
        return f"fixed gamma={_short(keys.get(PENALTY_GAMMA))}"
    if kind == "ramp":
        return f"ramp (decay {_short(keys.get(PENALTY_DECAY))})"
    return _plain_label(keys)


def penalty_order(keys: KeyValues) -> tuple:
    kind = keys.get(PENALTY_KIND)
    parameter = keys.get(PENALTY_DECAY if kind == "ramp" else PENALTY_GAMMA)
    return (0 if kind == "ramp" else 1, sort_value(kind), sort_value(parameter))


def algorithm_label(keys: KeyValues) -> str:
    algorithm = keys.get(ALGORITHM)
    number = int(algorithm) if _is_number(algorithm) else algorithm
    return ALGORITHM_LABELS.get(number, f"Alg. {algorithm}")


SEAL_ONLY = {METHOD: "seal"}

# Under zip_shortest a smaller safe set also means fewer selector steps (docs/fidelity.md), so the
# safe-set ablation's numbers mean something else under each rule: its table says which one ran.
EPOCH_RULE = Setting(SELECTOR_EPOCH, "Selector epoch rule", {
    "cycle_safe": "an epoch is one pass over D_ft, the safe set cycled beside it",
    "zip_shortest": "the reference code's zip(safe, ft): an epoch ends with the shorter set",
})

ACTIVATION_ABLATION = Ablation(
    "activation", "Selector activation", "Activation", (ACTIVATION,), {ACTIVATION: "softmax"}, SEAL_ONLY,
    label=lambda keys: str(keys.get(ACTIVATION)), order=_preferred(ACTIVATION, ("softmax", "sigmoid", "relu")))
SAFE_FRACTION_ABLATION = Ablation(
    "safe_fraction", "Upper-level safe-set size", "Safe-set size", (SAFE_FRACTION, SAFE_FRACTION_UNIT),
    {SAFE_FRACTION: 0.2}, SEAL_ONLY, label=safe_fraction_label, stated=(EPOCH_RULE,))
PENALTY_ABLATION = Ablation(
    "penalty", "Penalty schedule", "Penalty schedule", (PENALTY_KIND, PENALTY_GAMMA, PENALTY_DECAY),
    {PENALTY_KIND: "ramp", PENALTY_DECAY: 0.03}, SEAL_ONLY, label=penalty_label, order=penalty_order)
ALGORITHM_ABLATION = Ablation(
    "algorithm", "Algorithm 1 vs Algorithm 2", "Algorithm", (ALGORITHM,), {ALGORITHM: 2}, SEAL_ONLY,
    label=algorithm_label)
# The selector file is a key so that `method: file` cells (one per file) show up instead of being
# excluded for differing from the base in a column no other study varies.
MAIN_TABLE = Ablation(
    "main", "Main table", "Method", (METHOD, SELECTOR_FILE), {METHOD: "sft"}, label=method_label,
    order=_preferred(METHOD, tuple(METHOD_LABELS)))

SEAL_ABLATIONS: tuple[Ablation, ...] = (
    ACTIVATION_ABLATION, SAFE_FRACTION_ABLATION, PENALTY_ABLATION, ALGORITHM_ABLATION)
DEFAULT_ABLATIONS: tuple[Ablation, ...] = (*SEAL_ABLATIONS, MAIN_TABLE)


def swept_columns(frame: pd.DataFrame) -> list[str]:
    """Config columns that take more than one value in the frame (None/NaN counts as a value)."""
    return [c for c in frame.columns
            if c.startswith(CONFIG) and c not in NOT_SWEPT and frame[c].nunique(dropna=False) > 1]


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates("cell_id") if "cell_id" in frame.columns else frame


def base_values(frame: pd.DataFrame, columns: Sequence[str],
                reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The base value of each column: the override when given, else its most common value over cells."""
    cells = _cells(frame)
    base: dict[str, Any] = {}
    for column in columns:
        if reference and column in reference:
            base[column] = reference[column]
            continue
        # Counter keeps first-seen order on ties, so a tie resolves to the value of the earliest cell.
        counts = Counter(None if is_missing(v) else v for v in cells[column])
        base[column] = counts.most_common(1)[0][0] if counts else None
    return base


def ablation_reference(ablation: Ablation, reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ablation's reference key values, with any override of its keys applied."""
    merged = dict(ablation.reference)
    merged.update({k: v for k, v in (reference or {}).items() if k in ablation.keys})
    return merged


def ablation_rows(frame: pd.DataFrame, ablation: Ablation, *, reference: Mapping[str, Any] | None = None,
                  swept: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows whose swept columns differ from the base only in the ablation's keys (all seeds, all statuses)."""
    if frame.empty or any(key not in frame.columns for key in ablation.keys):
        return frame.iloc[0:0]
    swept = swept_columns(frame) if swept is None else [c for c in swept if c in frame.columns]
    pinned = {c: v for c, v in ablation.require.items() if c in frame.columns}
    others = [c for c in swept if c not in ablation.keys and c not in pinned]
    pinned.update(base_values(frame, others, reference))
    mask = np.ones(len(frame), dtype=bool)
    for column, value in pinned.items():
        mask &= matches(frame[column], value).to_numpy()
    return frame[mask]


def key_values(row: pd.Series | Mapping[str, Any], ablation: Ablation) -> dict[str, Any]:
    return {key: (None if is_missing(row[key]) else row[key]) for key in ablation.keys}


def is_reference(keys: KeyValues, reference: Mapping[str, Any]) -> bool:
    return all(same_value(keys.get(column), value) for column, value in reference.items())
