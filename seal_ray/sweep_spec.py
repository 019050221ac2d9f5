"""Sweep files: a base cell (a diff over the defaults) plus what varies, validated before anything runs.

    name: activation                 # default sweep name
    base: {selector: {epochs: 3}}    # the reference cell, as a diff over the built-in defaults
    seeds: 3                         # N (seeds 0..N-1) or a list
    reference_seeds: 8               # optional: the base cell and Standard SFT run seeds 0..7 (>= seeds)
    baselines: [sft, random, oracle] # cells with selection.method set, at the base config
    ablations:                       # each varied alone around the base (one factor at a time)
      activation:
        selector.activation: [softmax, sigmoid, relu]
      penalty:                       # or a list of variants, each setting several keys at once
        - {penalty.kind: ramp, penalty.decay: 0.03}
        - {penalty.kind: fixed, penalty.gamma: 0.1}
    grid:                            # a full cartesian product over the base
      selection.topp: [0.7, 0.8]
    search:                          # optional: Optuna over continuous keys (see OptunaSpec)
      method: optuna
      metric: winrate/hexphi
      mode: max
      samples: 8
      seed: 0
      space: {selector.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}}
    tracking_uri: http://127.0.0.1:5000  # optional: MLflow (tracking.py); --tracking-uri overrides it

Each cell is identified by the hash of its config without the seed, so the base cell of several
ablations is one cell, run once.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seal_ray.config import CellConfig, cell_from_dict, config_hash, leaf_keys, read_yaml, set_dotted, to_dict
from seal_ray.errors import ConfigError, did_you_mean

TOP_KEYS = ("name", "description", "base", "seeds", "reference_seeds", "baselines", "ablations", "grid", "search",
            "tracking_uri")
BASELINE_METHODS = ("sft", "random", "oracle", "seal", "file", "dsir", "safeinstr", "seal_safeinstr")
SEARCH_KEYS = ("method", "metric", "mode", "samples", "seed", "space")
DISTRIBUTIONS = ("uniform", "loguniform", "int")


@dataclass
class Cell:
    cell_id: str
    config: CellConfig  # seed 0 placeholder; the seed is set per trial
    label: str
    studies: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # None: the sweep's seeds; else this cell's own (reference_seeds)

    def with_seed(self, seed: int) -> CellConfig:
        return dataclasses.replace(self.config, seed=seed)


@dataclass
class OptunaSpec:
    metric: str
    mode: str
    samples: int
    seed: int
    space: dict[str, dict[str, Any]]


@dataclass
class SweepSpec:
    name: str
    source: str
    cells: list[Cell]
    seeds: list[int]
    search: OptunaSpec | None = None
    description: str = ""
    raw: dict = field(default_factory=dict)
    tracking_uri: str | None = None  # MLflow (tracking.py); --tracking-uri overrides it

    def seeds_of(self, cell: Cell) -> list[int]:
        return cell.seeds if cell.seeds is not None else self.seeds

    def runs(self) -> list[tuple[Cell, int]]:
        """Every cell x seed the file asks for."""
        return [(cell, seed) for cell in self.cells for seed in self.seeds_of(cell)]

    def size(self) -> str:
        """'15 cells x 5 seeds', plus the seeds of cells that run their own (reference_seeds)."""
        own = sorted({len(c.seeds) for c in self.cells if c.seeds is not None and c.seeds != self.seeds})
        return f"{len(self.cells)} cells x {len(self.seeds)} seeds" + "".join(
            f" (the reference cell and Standard SFT: {n} seeds)" for n in own)


def cell_id_of(config: CellConfig) -> str:
    return config_hash(dataclasses.replace(config, seed=0))


def _err(message: str, source: str, where: str) -> ConfigError:
    return ConfigError(message, source=source, field=where)


def _check_key(dotted: str, source: str, where: str) -> None:
    keys = leaf_keys()
    if dotted not in keys:
        raise _err(f"'{dotted}' is not a config key{did_you_mean(dotted, keys)}", source, where)
    if dotted == "seed":
        raise _err("set seeds with the top-level 'seeds', not as an axis", source, where)


def _apply(base: dict, assignments: dict[str, Any]) -> dict:
    tree = copy.deepcopy(base)
    for dotted, value in assignments.items():
        set_dotted(tree, dotted, value)
    return tree


def _label(assignments: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in assignments.items()) or "reference"


def _variants(name: str, body: Any, source: str) -> list[dict[str, Any]]:
    where = f"ablations.{name}"
    if isinstance(body, dict):
        for dotted, values in body.items():
            _check_key(dotted, source, f"{where}.{dotted}")
            if not isinstance(values, list) or not values:
                raise _err("expected a non-empty list of values", source, f"{where}.{dotted}")
        return [dict(zip(body, combo)) for combo in itertools.product(*body.values())]
    if isinstance(body, list) and body and all(isinstance(v, dict) for v in body):
        for i, variant in enumerate(body):
            for dotted in variant:
                _check_key(dotted, source, f"{where}[{i}].{dotted}")
        return [dict(v) for v in body]
    raise _err("expected a mapping of key -> list of values, or a list of mappings", source, where)


def _build_cell(tree: dict, source: str, where: str) -> CellConfig:
    try:
        return cell_from_dict(tree, source=source)
    except ConfigError as err:
        raise _err(f"{err} (in {where})", source, where) from None


def _seeds(value: Any, source: str) -> list[int]:
    if isinstance(value, bool) or value is None:
        raise _err("expected a number of seeds or a list of seeds", source, "seeds")
    if isinstance(value, int):
        if value < 1:
            raise _err(f"{value} is out of range; it must be >= 1", source, "seeds")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        return sorted(set(value))
    raise _err("expected a number of seeds or a non-empty list of seeds >= 0", source, "seeds")


def _reference_seeds(value: Any, seeds: list[int], source: str) -> list[int]:
    if isinstance(value, bool) or not isinstance(value, int) or value < len(seeds) or seeds != list(range(len(seeds))):
        raise _err(f"expected a number of seeds >= seeds ({len(seeds)}), with seeds given as a number: the reference "
                   f"cell and Standard SFT run seeds 0..N-1", source, "reference_seeds")
    return list(range(value))


def _search(raw: Any, source: str) -> OptunaSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _err("expected a mapping", source, "search")
    for key in raw:
        if key not in SEARCH_KEYS:
            raise _err(f"unknown key{did_you_mean(key, SEARCH_KEYS)}; allowed: {', '.join(SEARCH_KEYS)}", source, f"search.{key}")
    if raw.get("method", "optuna") != "optuna":
        raise _err(f"'{raw['method']}' is not allowed{did_you_mean(raw['method'], ['optuna'])}; allowed values: optuna", source, "search.method")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise _err(f"'{mode}' is not allowed; allowed values: max, min", source, "search.mode")
    samples = raw.get("samples", 8)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise _err(f"{samples!r} is out of range; it must be an integer >= 1", source, "search.samples")
    if "metric" not in raw or not isinstance(raw["metric"], str):
        raise _err("a metric name is required, e.g. winrate/hexphi", source, "search.metric")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise _err("expected a mapping of config key -> {type, low, high}", source, "search.space")
    for dotted, dist in space.items():
        where = f"search.space.{dotted}"
        _check_key(dotted, source, where)
        if not isinstance(dist, dict) or dist.get("type") not in DISTRIBUTIONS:
            got = dist.get("type") if isinstance(dist, dict) else dist
            raise _err(f"type '{got}' is not allowed{did_you_mean(got, DISTRIBUTIONS)}; allowed: {', '.join(DISTRIBUTIONS)}", source, where)
        if not all(isinstance(dist.get(b), (int, float)) for b in ("low", "high")) or not dist["low"] < dist["high"]:
            raise _err("needs numbers low < high", source, where)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _err(f"expected an integer, got {seed!r}", source, "search.seed")
    return OptunaSpec(metric=raw["metric"], mode=mode, samples=samples, seed=seed, space=space)


def _tracking_uri(value: Any, source: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _err(f"expected an MLflow tracking URI (http://HOST:PORT or a folder such as ./mlruns), got {value!r}",
                   source, "tracking_uri")
    return value


def parse_sweep(raw: Any, source: str, name: str | None = None, seeds: int | None = None) -> SweepSpec:
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with keys " + ", ".join(TOP_KEYS), source=source)
    for key in raw:
        if key not in TOP_KEYS:
            raise _err(f"unknown key{did_you_mean(key, TOP_KEYS)}; allowed keys: {', '.join(TOP_KEYS)}", source, str(key))
    base_tree = raw.get("base") or {}
    if not isinstance(base_tree, dict):
        raise _err("expected a mapping (a diff over the default cell config)", source, "base")
    base = _build_cell(base_tree, source, "base")

    cells: dict[str, Cell] = {}

    def add(assignments: dict[str, Any], study: str | None, where: str) -> None:
        config = _build_cell(_apply(base_tree, assignments), source, where)
        cell_id = cell_id_of(config)
        cell = cells.setdefault(cell_id, Cell(cell_id, dataclasses.replace(config, seed=0), _label(assignments)))
        if study and study not in cell.studies:
            cell.studies.append(study)

    add({}, "reference", "base")
    ablations = raw.get("ablations") or {}
    if not isinstance(ablations, dict):
        raise _err("expected a mapping of ablation name -> values", source, "ablations")
    for study, body in ablations.items():
        for i, variant in enumerate(_variants(study, body, source)):
            add(variant, study, f"ablations.{study}[{i}]")
    grid = raw.get("grid") or {}
    if grid:
        for i, variant in enumerate(_variants("grid", grid, source)):
            add(variant, "grid", f"grid[{i}]")
    baselines = raw.get("baselines") or []
    if not isinstance(baselines, list):
        raise _err("expected a list of methods", source, "baselines")
    for method in baselines:
        if method not in BASELINE_METHODS:
            raise _err(f"'{method}' is not allowed{did_you_mean(method, BASELINE_METHODS)}; allowed values: {', '.join(BASELINE_METHODS)}", source, "baselines")
        add({"selection.method": method}, "main", f"baselines[{method}]")
    if base.selection.method == "seal" and "main" in {s for c in cells.values() for s in c.studies}:
        cells[cell_id_of(base)].studies.append("main")

    seed_list = list(range(seeds)) if seeds is not None else _seeds(raw.get("seeds", 1), source)
    if seeds is None and raw.get("reference_seeds") is not None:
        # The pair a study's headline comparison is about (SEAL's reference cell and Standard SFT) can
        # run more seeds than the rest; --seeds N asks for N seeds of every cell.
        extra = _reference_seeds(raw["reference_seeds"], seed_list, source)
        reference = cell_id_of(base)
        for cell in cells.values():
            if cell.cell_id == reference or cell.label == "method=sft":
                cell.seeds = extra
    sweep_name = name or raw.get("name") or Path(source).stem
    if not isinstance(sweep_name, str) or not sweep_name.replace("-", "").replace("_", "").isalnum():
        raise _err(f"'{sweep_name}' is not a usable name (letters, digits, - and _)", source, "name")
    return SweepSpec(name=sweep_name, source=source, cells=list(cells.values()), seeds=seed_list,
                     search=_search(raw.get("search"), source), description=str(raw.get("description", "")), raw=raw,
                     tracking_uri=_tracking_uri(raw.get("tracking_uri"), source))


def load_sweep(path: str | Path, name: str | None = None, seeds: int | None = None) -> SweepSpec:
    return parse_sweep(read_yaml(path), str(path), name=name, seeds=seeds)


def is_sweep_file(raw: Any) -> bool:
    return isinstance(raw, dict) and any(k in raw for k in ("ablations", "grid", "baselines", "seeds", "search", "base"))


def cell_tree(cell: Cell) -> dict:
    return to_dict(cell.config)
