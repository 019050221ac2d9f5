"""Which row each logit of a reference-code selector file belongs to: the reference's row filter, rebuilt.

The reference implementation (SEAL.md, "Data") gives its selector one logit per row that survives its
dataset filter, numbered by position AFTER filtering; the official Llama-3 selector has 111,900 logits
for 112,000 rows. Reading position k as row id k shifts every id after the first dropped row. This
module rebuilds the filter from the dataset and the tokenizer, so position k maps to the stable id of
the k-th surviving row (a row's id is its index in the source file, as in seal_ray/recipes.py).

The reference's filter (SEAL's seal/datasets/sft_dataset_indexed.py, as run by train_sft_selector.py),
restated:
- the first `--max_samples` records in file order (data.ft.limit here);
- prompt and response from the record by its schema (`reference_prompt_response`), the prompt template
  `--input_template` applied to the prompt;
- the prompt tokenised with the tokenizer's own special tokens, truncated at `--max_len`: the row is
  dropped when that count is >= max_len - 2 (the response's length is never checked: the reference
  truncates long rows at training time instead);
- the row is dropped when the prompt or the response is empty.
Pure functions of records and a transformers tokenizer; no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from seal_ray.errors import ConfigError, UserError

if TYPE_CHECKING:
    from seal_ray.config import CellConfig

REFERENCE_TEMPLATE = "Human: {}\nAssistant: "  # the reference's --input_template default
REFERENCE_MAX_LEN = 2048  # --max_len of the reference's Llama-3 selector script (train_selector_llama3.sh)
_LENGTH_MARGIN = 2  # "2 for answer length": the reference drops prompts of max_len - 2 tokens or more
_BATCH = 1024  # prompts tokenised per call


@dataclass(frozen=True)
class LogitMapping:
    """Position k of a reference selector file -> stable row id `ids[k]`, and why the other rows have none."""

    ids: list[int]
    n_rows: int
    too_long: list[int]  # ids whose templated prompt has >= max_len - 2 tokens
    empty: list[int]  # ids with an empty prompt or response
    max_len: int

    def describe(self) -> str:
        dropped = len(self.too_long) + len(self.empty)
        return (f"the reference's filter keeps {len(self.ids)} of {self.n_rows} rows: it drops {dropped} "
                f"({len(self.too_long)} whose prompt has >= {self.max_len - _LENGTH_MARGIN} tokens "
                f"(max_len {self.max_len} - {_LENGTH_MARGIN}), {len(self.empty)} with an empty prompt or response)")


def _present(record: dict, key: str) -> bool:
    return record.get(key) is not None


def reference_prompt_response(record: dict, template: str = REFERENCE_TEMPLATE, input_key: str | None = None,
                              output_key: str | None = None) -> tuple[str, str]:
    """(templated prompt, response) of one record, read the way the reference reads its schemas.

    Schemas in the reference's order of detection; some carry their own template (no second one applied)."""
    if input_key and output_key:
        return template.format(record[input_key]), record[output_key]
    if _present(record, "prompt") and _present(record, "chosen"):
        return record["prompt"], record["chosen"]
    if _present(record, "prompt") and _present(record, "label"):
        prompt = record["prompt"].replace("USER:", "").replace("ASSISTANT:", "")
        return template.format(prompt), record["label"].replace("</s>", "")
    if _present(record, "system_prompt") and _present(record, "response"):
        return template.format(record["question"]), record["response"]  # OpenOrca: the system prompt is left out
    if _present(record, "conversations"):
        # SlimOrca / RedOrca: every turn but the last makes the prompt (human turns templated, others
        # followed by a newline); the last turn is the response.
        turns = record["conversations"]
        prompt = "".join(template.format(t["value"]) if "human" in t["from"] else t["value"] + "\n" for t in turns[:-1])
        return prompt, turns[-1]["value"] if turns else ""
    if _present(record, "instruction") and _present(record, "input") and _present(record, "output"):
        prompt = record["instruction"] + ("\n" + record["input"] if len(record["input"]) >= 1 else "")
        return template.format(prompt), record["output"]
    if _present(record, "input") and _present(record, "output"):
        return record["input"], record["output"]
    raise UserError(f"a record with fields {', '.join(record)} is in none of the schemas the reference code reads "
                    "(conversations; instruction/input/output; prompt/chosen; prompt/label; system_prompt/response; "
                    "input/output): name its prompt and response columns (--input-key, --output-key)")


def reference_mapping(records: Sequence[dict], tokenizer: Any, *, max_len: int = REFERENCE_MAX_LEN,
                      template: str = REFERENCE_TEMPLATE, input_key: str | None = None,
                      output_key: str | None = None) -> LogitMapping:
    """The reference's filter over `records` (ids = their positions) with a transformers `tokenizer`."""
    pairs = [reference_prompt_response(record, template, input_key, output_key) for record in records]
    ids: list[int] = []
    too_long: list[int] = []
    empty: list[int] = []
    for start in range(0, len(pairs), _BATCH):
        chunk = pairs[start : start + _BATCH]
        prompts = [prompt for prompt, _ in chunk]
        lengths = [len(tokens) for tokens in tokenizer(prompts, max_length=max_len, truncation=True)["input_ids"]]
        for offset, ((prompt, response), length) in enumerate(zip(chunk, lengths)):
            row_id = start + offset
            # The length test comes first in the reference: an over-long row with an empty response counts as too long.
            if length >= max_len - _LENGTH_MARGIN:
                too_long.append(row_id)
            elif not prompt or not response:
                empty.append(row_id)
            else:
                ids.append(row_id)
    return LogitMapping(ids, len(records), too_long, empty, max_len)


def check_mapping(mapping: LogitMapping, n_logits: int, selector: str, needs: str) -> None:
    """Refuse a mapping that does not give every logit a row: the filter was not rebuilt as the file was made."""
    if len(mapping.ids) == n_logits:
        return
    raise UserError(
        f"selector file {selector}: {n_logits} logits, but {mapping.describe()}, so positions cannot be mapped to "
        f"row ids. Rebuild the filter the file was made with: {needs}"
    )


def load_reference_tokenizer(name_or_path: str, where: str) -> Any:
    """A transformers tokenizer as the reference loads it (AutoTokenizer, fast when available)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{where} {name_or_path}: cannot load a tokenizer: {first}") from None


# --- a cell's `selection.method: file` ------------------------------------------------------------

CELL_NEEDS = ("data.source 'recipes' with data.ft the dataset the selector was trained on (data.ft.limit: the "
              "reference's --max_samples), model.name_or_path its tokenizer, data.max_len its --max_len and "
              "data.template its --input_template (not 'chat')")
_FIELD = "selection.selector_file"


def _can_rebuild(config: "CellConfig") -> bool:
    return config.data.source == "recipes" and config.data.template != "chat" and config.model.name_or_path != "mini"


def cell_logit_ids(config: "CellConfig", n_logits: int, n_rows: int, source: str | None = None) -> tuple[list[int], str]:
    """(row id of each logit of the cell's selector file, what was done to find them).

    A file with one entry per D_ft row is indexed by stable id already; a shorter one is a reference-code
    selector, mapped through the rebuilt filter, or refused (ConfigError, exit 2) when the cell cannot
    rebuild it: training on shifted ids is never an option."""
    path = config.selection.selector_file
    if n_logits == n_rows:
        return list(range(n_rows)), f"{n_logits} logits, one per D_ft row"
    if n_logits > n_rows:
        raise ConfigError(f"selector file {path} has {n_logits} logits for D_ft's {n_rows} rows: more logits than "
                          "rows, so it was not trained on this D_ft", source=source, field=_FIELD)
    if not _can_rebuild(config):
        raise ConfigError(
            f"selector file {path} has {n_logits} logits for D_ft's {n_rows} rows: a selector written by the reference "
            "code has one logit per row its length filter kept, so its positions are not row ids, and this cell cannot "
            f"rebuild that filter. It needs {CELL_NEEDS}", source=source, field=_FIELD)
    from seal_ray.recipes import RECIPES, read_records, resolve

    ft = config.data.ft
    recipe = resolve(ft.recipe, "ft")
    _, records = read_records(ft, "data.ft")
    keys: tuple[str | None, str | None] = (None, None)
    if recipe == "prompt_response":  # the reference's --input_key / --output_key
        columns = RECIPES.get(recipe).columns(ft.fields)
        keys = (columns["prompt"], columns["response"])
    tokenizer = load_reference_tokenizer(config.model.name_or_path, "model.name_or_path")
    try:
        mapping = reference_mapping(records, tokenizer, max_len=config.data.max_len, template=config.data.template,
                                    input_key=keys[0], output_key=keys[1])
        check_mapping(mapping, n_logits, path, CELL_NEEDS)
    except UserError as err:
        raise ConfigError(str(err), source=source, field=_FIELD) from None
    return mapping.ids, mapping.describe()


def check_cell_selector_file(config: "CellConfig", source: str | None = None) -> None:
    """Before any stage runs: a mini-world cell whose selector file cannot be mapped to its rows is refused."""
    if config.selection.method != "file" or config.data.source != "mini":
        return
    from seal_ray.selector import load_selector

    try:
        n_logits = load_selector(config.selection.selector_file).numel()
    except UserError as err:
        raise ConfigError(str(err), source=source, field=_FIELD) from None
    cell_logit_ids(config, n_logits, config.world.n_ft, source)
