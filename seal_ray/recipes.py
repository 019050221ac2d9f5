"""Dataset recipes: real datasets (SlimOrca, Anthropic HH, HEx-PHI, any prompt/response table) as pipeline rows.

A recipe reads one source (a hub id, or local jsonl/json/csv/parquet files: one file or a directory) with
`datasets.load_dataset` and turns each record into a row {"id", "prompt", "response", ...}. The id is the
record's index in the source order, given BEFORE anything drops or reorders rows: the selector is indexed by
id, and the reference code's shifted indices (SEAL.md, "Data") are the bug this avoids. So `limit` keeps the
first N records and `shuffle` reorders rows without renumbering them; over-long rows are dropped later, at
encoding, and keep their ids too.

Recipes resolve through a registry with "did you mean" errors; docs/recipes.md lists them with their schemas.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from seal_ray.errors import UserError
from seal_ray.registry import Registry

if TYPE_CHECKING:
    from seal_ray.config import RecipeSource

# The builder `datasets.load_dataset` needs for each local file type.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

# HEx-PHI's 11 categories in the order of its files category_1.csv ... category_11.csv (names as in world.py).
HEXPHI_CATEGORIES = (
    "illegal_activity", "child_abuse", "hate_harass_violence", "malware", "physical_harm", "economic_harm",
    "fraud_deception", "adult_content", "political_campaigning", "privacy_violation", "tailored_financial_advice",
)

# The recipe each data slot uses when data.<slot>.recipe is left empty.
SLOT_RECIPES = {"ft": "slimorca", "safe": "slimorca", "hh": "hh", "orca": "slimorca", "hexphi": "hexphi"}


@dataclass(frozen=True)
class Recipe:
    """How one schema becomes rows. `fields` maps each field the recipe reads to its default column name;
    a default of "" marks an optional field, read only when the config names a column for it; `required`
    fields may not be switched off with ""."""

    name: str
    description: str
    fields: dict[str, str]
    convert: Callable[[dict, dict[str, str]], dict]
    read: Callable[["RecipeSource", str], tuple[str, list[dict]]] | None = None  # a reader of its own (HEx-PHI)
    required: tuple[str, ...] = field(default=())

    def columns(self, overrides: dict[str, str]) -> dict[str, str]:
        """field -> column name, the config's `fields` over the defaults ("" = not read)."""
        return {**self.fields, **{k: str(v) for k, v in overrides.items()}}


RECIPES: Registry[Recipe] = Registry("dataset recipe")


def _add(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name)(recipe)


# --- record -> row converters -----------------------------------------------------------------------

_ROLE = {"system": "system", "human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}


def _slimorca_row(record: dict, columns: dict[str, str]) -> dict:
    turns = record[columns["conversations"]] or []
    first: dict[str, str] = {}
    for turn in turns:
        # SlimOrca writes {"from", "value"}; the ShareGPT/OpenAI spelling {"role", "content"} reads the same.
        role = _ROLE.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role and role not in first:
            first[role] = str(turn.get("value", turn.get("content", "")) or "")
    prompt = first.get("human", "").strip()
    system = first.get("system", "").strip()
    return {"prompt": f"{system}\n\n{prompt}" if system and prompt else prompt, "response": first.get("gpt", "").strip()}


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def hh_first_exchange(text: str) -> tuple[str, str]:
    """("first Human turn", "the Assistant turn after it") of an HH-RLHF transcript."""
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))
    prompt, response = "", ""
    # parts = [preamble, speaker, text, speaker, text, ...]
    for speaker, said in zip(parts[1::2], parts[2::2]):
        if speaker == "Human" and not prompt:
            prompt = said.strip()
        elif speaker == "Assistant" and prompt:
            response = said.strip()
            break
    return prompt, response


def _hh_row(record: dict, columns: dict[str, str]) -> dict:
    prompt, response = hh_first_exchange(str(record[columns["chosen"]] or ""))
    return {"prompt": prompt, "response": response}


def _prompt_response_row(record: dict, columns: dict[str, str]) -> dict:
    def text(name: str) -> str:
        column = columns.get(name, "")
        value = record.get(column) if column else None
        return "" if value is None else str(value).strip()

    prompt = "\n\n".join(part for part in (text("system"), text("prompt"), text("input")) if part)
    row = {"prompt": prompt, "response": text("response")}
    if columns.get("category"):
        row["category"] = text("category")
    return row


def _hexphi_row(record: dict, columns: dict[str, str]) -> dict:
    return {"prompt": record["prompt"], "response": "", "category": record["category"], "kind": "harmful"}


# --- sources ----------------------------------------------------------------------------------------


def is_local(path: str) -> bool:
    return Path(path).expanduser().exists()


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).suffix in BUILDERS


def local_files(path: str, where: str) -> list[Path]:
    """The data files of a local source: the file itself, or a directory's files in name order."""
    root = Path(path).expanduser()
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in BUILDERS)
        if not files:
            raise UserError(f"dataset {path} ({where}): no {', '.join(BUILDERS)} files in this directory")
    for file in files:
        if file.suffix not in BUILDERS:
            raise UserError(f"dataset {file} ({where}): unknown file type '{file.suffix}'; "
                            f"allowed: {', '.join(BUILDERS)} (or a hub dataset id)")
    kinds = {BUILDERS[f.suffix] for f in files}
    if len(kinds) > 1:
        raise UserError(f"dataset {path} ({where}): mixes file types ({', '.join(sorted(kinds))}); keep one per directory")
    return files


@functools.lru_cache(maxsize=256)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(path: str, revision: str | None = None) -> str:
    """A content digest of a local source (so an edited file invalidates the cache), else the hub id@revision."""
    if not is_local(path):
        return f"hub:{path}@{revision or 'main'}"
    root = Path(path).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0".encode())
        digest.update(_file_sha(str(file), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def _load(builder: str, where: str, shown: str, **kwargs: Any) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(builder, **kwargs).to_list()
    except (OSError, ValueError, StopIteration, datasets.exceptions.DatasetGenerationError) as err:
        reason = str(err.__cause__ or err) or type(err).__name__
        raise UserError(f"dataset {shown} ({where}): cannot be read as {builder}: {reason.splitlines()[0][:300]}") from None


def _read_local(files: list[Path], where: str, shown: str, builder: str | None = None, **kwargs: Any) -> list[dict]:
    if all(f.stat().st_size == 0 for f in files):
        raise UserError(f"dataset {shown} ({where}): empty (no rows)")
    with tempfile.TemporaryDirectory(prefix="seal_ray_recipe_") as cache:
        # A throwaway cache: the Arrow copy of a local file must not pile up in ~/.cache or the stage folder.
        return _load(builder or BUILDERS[files[0].suffix], where, shown, data_files=[str(f) for f in files],
                     split="train", cache_dir=cache, keep_in_memory=True, **kwargs)


def read_records(source: "RecipeSource", where: str) -> tuple[str, list[dict]]:
    """(what to call the source in messages, its first `limit` records in source order)."""
    path = source.path
    if is_local(path):
        files = local_files(path, where)
        shown = str(files[0]) if len(files) == 1 else path
        records = _read_local(files, where, shown)
    else:
        if _looks_local(path):
            raise UserError(f"dataset {path} ({where}): no such file or directory")
        shown = path
        split = source.split if source.limit is None else f"{source.split}[:{source.limit}]"
        records = _load(path, where, shown, name=source.subset, split=split, revision=source.revision)
    if source.limit is not None:
        records = records[: source.limit]
    if not records:
        raise UserError(f"dataset {shown} ({where}): empty (no rows)")
    return shown, records


def _read_hexphi(source: "RecipeSource", where: str) -> tuple[str, list[dict]]:
    """HEx-PHI: category_N.csv files, one harmful instruction per line, no header."""
    path = source.path
    if not is_local(path):
        raise UserError(f"dataset {path} ({where}): recipe 'hexphi' reads a local directory of category_N.csv "
                        "files (HEx-PHI is gated on the hub: download it and point the path at the folder)")
    root = Path(path).expanduser()
    files = [root] if root.is_file() else list(root.glob("*.csv"))
    if not files:
        raise UserError(f"dataset {path} ({where}): no category_N.csv files in this directory")

    def number(file: Path) -> tuple[int, str]:
        found = re.fullmatch(r"category_(\d+)", file.stem)
        return (int(found.group(1)) if found else 10**6, file.name)

    records = []
    for file in sorted(files, key=number):
        if file.stat().st_size == 0:
            continue
        index = number(file)[0]
        category = HEXPHI_CATEGORIES[index - 1] if 1 <= index <= len(HEXPHI_CATEGORIES) else file.stem
        # The `text` builder reads one line per record; csv.reader then undoes the quoting of lines with commas.
        for line in _read_local([file], where, str(file), builder="text"):
            text = ",".join(next(csv.reader([line["text"]]), [])).strip()
            if text:
                records.append({"prompt": text, "category": category})
    records = records[: source.limit] if source.limit is not None else records
    if not records:
        raise UserError(f"dataset {path} ({where}): empty (no rows)")
    return path, records


# --- the recipes ------------------------------------------------------------------------------------

_add(Recipe(
    "slimorca", "SlimOrca / ShareGPT conversations: the system turn is put before the first human turn (the "
    "prompt); the first gpt turn is the response. Used for D_ft (RedOrca), the safe set (BlueOrca) and the orca test set.",
    {"conversations": "conversations"}, _slimorca_row, required=("conversations",),
))
_add(Recipe(
    "hh", "Anthropic HH-RLHF: the prompt is the first Human turn of `chosen`, the response the Assistant turn after it.",
    {"chosen": "chosen"}, _hh_row, required=("chosen",),
))
_add(Recipe(
    "hexphi", "HEx-PHI: a directory of category_1.csv ... category_11.csv, one harmful instruction per line, "
    "no header; rows carry `category` (and an empty response).",
    {}, _hexphi_row, read=_read_hexphi,
))
_add(Recipe(
    "prompt_response", "Any table with a prompt and a response column (jsonl, json, csv, parquet, or a hub id); "
    "optional system/input columns are joined into the prompt, an optional category column is kept. "
    "Set fields.response to '' for prompts only (a test set).",
    {"prompt": "prompt", "response": "response", "system": "", "input": "", "category": ""},
    _prompt_response_row, required=("prompt",),
))


def resolve(recipe: str, slot: str) -> str:
    """The recipe a slot uses: its own, or the slot's default when left empty."""
    return recipe or SLOT_RECIPES.get(slot, "prompt_response")


def load_rows(source: "RecipeSource", slot: str, where: str) -> list[dict]:
    """Rows {"id", "prompt", "response", ...} of one source; ids = source order, then an optional seeded shuffle."""
    recipe = RECIPES.get(resolve(source.recipe, slot))
    columns = recipe.columns(source.fields)
    shown, records = (recipe.read or read_records)(source, where)
    if recipe.read is None:
        found = list(records[0])
        for name, column in columns.items():
            if column and column not in found:
                hint = f"set {where}.fields.{name} to the column that holds it" if column == recipe.fields.get(name) else \
                    f"check {where}.fields.{name}"
                raise UserError(
                    f"dataset {shown} ({where}, recipe '{recipe.name}'): missing field '{column}'; "
                    f"fields found: {', '.join(found)}; {hint}"
                )
    rows = [{"id": index, **recipe.convert(record, columns)} for index, record in enumerate(records)]
    if source.shuffle:
        random.Random(source.seed).shuffle(rows)
    return rows
