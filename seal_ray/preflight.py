"""Checks of what a cell needs from outside its config, made before any stage runs.

A config can be valid and still name a dataset file that is not there, a safety file with a typo or an
API key variable nobody exported. Found by the stage that reads them, such a mistake would cost the
training before it (and leave a failed cell); found here, it is a `ConfigError` naming the field, exit
code 2, and nothing is written. Local checks only: local dataset files are read through their
recipe (a missing field or an empty file is caught here, each source once per process); hub ids are
left to the stage that loads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.errors import ConfigError, UserError
from seal_ray.official_selector import check_cell_selector_file

SAFETY_METHODS = ("safeinstr", "seal_safeinstr")
_read_ok: set[str] = set()  # local sources already read whole in this process (a sweep's cells share them)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or Path(value).expanduser().exists()


def _must_exist(value: str, field: str, what: str, source: str | None) -> None:
    if not Path(value).expanduser().exists():
        raise ConfigError(f"{what} {value} does not exist", source=source, field=field)


def _must_be_a_selector(path: str, source: str | None) -> None:
    """An unreadable file or a non-finite logit stops the sweep here, not in the cell's select stage."""
    from seal_ray.selector import load_selector

    try:
        load_selector(path)
    except UserError as err:
        raise ConfigError(str(err), source=source, field="selection.selector_file") from None


def _recipe_slots(config: CellConfig) -> dict[str, str]:
    slots = {"ft": config.data.ft.path, "safe": config.data.safe.path}
    for name in config.evaluation.test_sets:
        slots[name] = getattr(config.data, name).path
    return slots


def check_cell_inputs(config: CellConfig, source: str | None = None) -> None:
    """Raise a ConfigError for the first input of `config` that is missing on this machine."""
    from seal_ray.recipes import _looks_local, load_rows, source_digest

    if config.data.source == "recipes":
        for slot, path in _recipe_slots(config).items():
            if path and _looks_local(path):
                _must_exist(path, f"data.{slot}.path", "dataset", source)
                recipe_source = getattr(config.data, slot)
                try:
                    seen = json.dumps([slot, dataclasses.asdict(recipe_source), source_digest(path)], sort_keys=True)
                    if seen not in _read_ok:
                        load_rows(recipe_source, slot, f"data.{slot}")  # names the file and the missing field
                        _read_ok.add(seen)
                except UserError as err:
                    if isinstance(err, ConfigError):
                        raise
                    raise ConfigError(str(err), source=source, field=f"data.{slot}.path") from None
    selection = config.selection
    if selection.method == "file" and selection.selector_file:
        _must_exist(selection.selector_file, "selection.selector_file", "selector file", source)
        check_cell_selector_file(config, source)  # a mini-world cell cannot map a shorter (reference) file
        _must_be_a_selector(selection.selector_file, source)
    if selection.method in SAFETY_METHODS and selection.safety_file:
        _must_exist(selection.safety_file, "selection.safety_file", "safety file", source)
    if config.model.name_or_path != "mini" and _looks_like_path(config.model.name_or_path):
        _must_exist(config.model.name_or_path, "model.name_or_path", "model directory", source)
    evaluation = config.evaluation
    if evaluation.judge == "reward_model" and evaluation.reward_model.path and _looks_like_path(evaluation.reward_model.path):
        _must_exist(evaluation.reward_model.path, "evaluation.reward_model.path", "reward model", source)
    env = evaluation.openai.api_key_env if evaluation.judge == "openai" else None
    if env and not os.environ.get(env):
        raise ConfigError(f"the environment variable {env} (the judge's API key) is not set or empty; "
                          f"export {env}=<your key>, or set api_key_env: null for a server without keys",
                          source=source, field="evaluation.openai.api_key_env")
