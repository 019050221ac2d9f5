"""Fidelity to SEAL's reference code: reference selector files mapped to row ids, rows with no logit."""

from __future__ import annotations

import json
import random

import pytest
import torch

from seal_ray.cli import main
from seal_ray.config import load_cell_config
from seal_ray.errors import ConfigError, UserError
from seal_ray.official_selector import cell_logit_ids, reference_mapping
from seal_ray.recipes import load_rows
from seal_ray.selector import NO_LOGIT, load_selector, save_selector, top_p_ids
from seal_ray.stages.select import choose
from tests.tiny_hf import make_tokenizer

TEMPLATE = "Human: {}\nAssistant: "
MAX_LEN = 40


def _records(n: int = 40, seed: int = 0) -> list[dict]:
    """SlimOrca-schema rows (the RedOrca file's): some over-long prompts, some empty responses or prompts."""
    rng = random.Random(seed)
    words = "bake bread steal car cat chat water yeast flour help".split()
    records = []
    for i in range(n):
        kind = rng.random()
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        response = f"answer {i}: " + " ".join(rng.choice(words) for _ in range(3))
        turns = [{"from": "system", "value": "You are a helpful assistant."}, {"from": "human", "value": prompt},
                 {"from": "gpt", "value": response}]
        if kind < 0.15:
            turns[1]["value"] = " ".join(rng.choice(words) for _ in range(60))  # over max_len
        elif kind < 0.22:
            turns[2]["value"] = ""  # nothing to learn
        elif kind < 0.27:
            turns = [{"from": "gpt", "value": response}]  # no prompt turn at all
        records.append({"conversations": turns, "score": rng.random()})
    return records


def reference_selector_loop(records: list[dict], tokenizer, max_len: int, template: str) -> torch.Tensor:
    """A re-implementation of the reference's selector construction (SFTDatasetIndexed, then one logit per
    surviving row, numbered by position): the logit of each row is its `score` (a trained selector's stand-in)."""
    logits = []
    for data in records:
        turns = data["conversations"]
        prompt = ""
        for turn in turns[:-1]:
            prompt += template.format(turn["value"]) if "human" in turn["from"] else turn["value"] + "\n"
        response = turns[-1]["value"]
        tokens = tokenizer(prompt, max_length=max_len, padding=False, truncation=True, return_tensors="pt")
        if tokens["attention_mask"].int().sum().item() >= max_len - 2:
            continue
        if not prompt or not response:
            continue
        logits.append(data["score"])
    return torch.tensor(logits, dtype=torch.float32)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """(dataset file, tokenizer dir, selector file, records) of a reference-style run on a small dataset."""
    root = tmp_path_factory.mktemp("reference")
    records = _records()
    dataset = root / "redorca.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = make_tokenizer(root / "tokenizer", [json.dumps(r) for r in records[:5]])
    selector = root / "selector_softmax.pt"
    save_selector(reference_selector_loop(records, tokenizer, MAX_LEN, TEMPLATE), selector)
    return dataset, root / "tokenizer", selector, records


def _expected_ids(records: list[dict], tokenizer, topp: float) -> list[int]:
    """The rows the reference meant to keep: top-p by score among the rows its filter kept, as file indices."""
    survivors = [i for i, r in enumerate(records) if len(reference_selector_loop([r], tokenizer, MAX_LEN, TEMPLATE))]
    scores = torch.tensor([records[i]["score"] for i in survivors], dtype=torch.float32)
    return top_p_ids(scores, survivors, topp)


def test_the_rebuilt_filter_maps_a_reference_selector_to_the_rows_it_scored(reference_run):
    dataset, tokenizer_dir, selector, records = reference_run
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    logits = load_selector(selector)
    mapping = reference_mapping(records, tokenizer, max_len=MAX_LEN, template=TEMPLATE)
    assert len(mapping.ids) == logits.numel() < len(records)
    assert mapping.too_long and mapping.empty  # the fixture exercises both reasons
    assert sorted(mapping.ids + mapping.too_long + mapping.empty) == list(range(len(records)))
    for position, row_id in enumerate(mapping.ids):  # each logit lands on the row whose score it is
        assert logits[position].item() == pytest.approx(records[row_id]["score"])
    expected = _expected_ids(records, tokenizer, 0.5)
    mapped = top_p_ids(logits, mapping.ids, 0.5)
    assert mapped == expected
    shifted = top_p_ids(logits, list(range(logits.numel())), 0.5)  # positions read as ids: the reference's bug
    assert shifted != expected


def test_select_cli_gives_row_ids_through_the_mapping_and_says_what_it_dropped(reference_run, tmp_path, capsys):
    dataset, tokenizer_dir, selector, records = reference_run
    from transformers import AutoTokenizer

    out = tmp_path / "ids.json"
    assert main(["select", "--selector", str(selector), "--topp", "0.5", "--out", str(out), "--dataset", str(dataset),
                 "--tokenizer", str(tokenizer_dir), "--max-len", str(MAX_LEN)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(out.read_text()) == _expected_ids(records, AutoTokenizer.from_pretrained(str(tokenizer_dir)), 0.5)
    assert "row ids" in printed and "drops" in printed and "empty prompt or response" in printed


def test_select_cli_refuses_a_mapping_that_does_not_fit_the_file(reference_run, tmp_path, capsys):
    dataset, tokenizer_dir, selector, _ = reference_run
    out = tmp_path / "ids.json"
    # A different --max-len rebuilds another filter: another row count, so no mapping, exit 2, nothing written.
    assert main(["select", "--selector", str(selector), "--topp", "0.5", "--out", str(out), "--dataset", str(dataset),
                 "--tokenizer", str(tokenizer_dir), "--max-len", "400"]) == 2
    err = capsys.readouterr().err
    assert "cannot be mapped to row ids" in err and "--max-len" in err
    assert not out.exists()
    assert main(["select", "--selector", str(selector), "--topp", "0.5", "--out", str(out), "--dataset", str(dataset)]) == 2
    assert "--tokenizer" in capsys.readouterr().err and not out.exists()


def test_select_cli_without_a_dataset_gives_positions_of_the_official_selector_and_says_so(
        tmp_path, capsys, official_selector_path):
    out = tmp_path / "ids.json"
    assert main(["select", "--selector", str(official_selector_path), "--topp", "0.8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    kept = json.loads(out.read_text())
    assert len(kept) == 89_520
    logits = load_selector(official_selector_path)
    assert kept == sorted(torch.topk(logits, 89_520).indices.tolist())
    assert "positions" in printed and "not row ids" in printed


def _recipes_cell(dataset, tokenizer_dir, selector, max_len=MAX_LEN):
    return load_cell_config(None, [
        "data.source=recipes", f"data.ft.path={dataset}", f"data.safe.path={dataset}", "evaluation.test_sets=[orca]",
        f"data.orca.path={dataset}", f"model.name_or_path={tokenizer_dir}", "evaluation.judge=reward_model",
        f"evaluation.reward_model.path={tokenizer_dir}", "evaluation.refusal_judge=keyword_refusal",
        "selection.method=file", f"selection.selector_file={selector}", "selection.topp=0.5", f"data.max_len={max_len}",
    ])


def test_a_file_cell_on_recipes_selects_the_rows_the_reference_selector_scored(reference_run, tmp_path):
    dataset, tokenizer_dir, selector, records = reference_run
    from transformers import AutoTokenizer

    config = _recipes_cell(dataset, tokenizer_dir, selector)
    world = {"ft": load_rows(config.data.ft, "ft", "data.ft")}
    lines = []
    kept, by_id = choose(config, world, None, tmp_path, lines.append)
    assert kept == _expected_ids(records, AutoTokenizer.from_pretrained(str(tokenizer_dir)), 0.5)
    assert by_id.numel() == len(records) and torch.isneginf(by_id).sum() == len(records) - load_selector(selector).numel()
    assert any("drops" in line for line in lines)
    with pytest.raises(ConfigError, match="cannot be mapped to row ids"):
        choose(_recipes_cell(dataset, tokenizer_dir, selector, max_len=400), world, None, tmp_path, lines.append)


def test_a_mini_world_cell_with_a_shorter_selector_file_is_refused_before_anything_runs(tmp_path, capsys, tiny_overrides):
    short = tmp_path / "short.pt"
    save_selector(torch.zeros(59), short)  # the tiny world has 60 D_ft rows
    args = ["run", "--out", str(tmp_path / "cell")]
    for override in [*tiny_overrides, "selection.method=file", f"selection.selector_file={short}"]:
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "59 logits for D_ft's 60 rows" in err and "data.source 'recipes'" in err and "selection.selector_file" in err
    assert not (tmp_path / "cell").exists()


def test_no_logit_rows_of_a_full_length_file_are_never_selected(tmp_path, capsys):
    logits = torch.tensor([0.5, NO_LOGIT, 2.0, NO_LOGIT, 1.0, -3.0])
    path = tmp_path / "ours.pt"
    save_selector(logits, path)
    assert torch.isneginf(load_selector(path)).sum() == 2  # the loader keeps NO_LOGIT entries
    out = tmp_path / "ids.json"
    assert main(["select", "--selector", str(path), "--topp", "0.5", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == [2, 4]  # floor(0.5 * 4 logits) = 2, among rows with a logit
    assert "kept 2 of 4" in capsys.readouterr().out


def test_reference_schemas_are_read_as_the_reference_reads_them():
    from seal_ray.official_selector import reference_prompt_response as read

    assert read({"instruction": "Add", "input": "1 2", "output": "3"}) == ("Human: Add\n1 2\nAssistant: ", "3")
    assert read({"instruction": "Add", "input": "", "output": "3"}) == ("Human: Add\nAssistant: ", "3")
    assert read({"input": "raw", "output": "x"}) == ("raw", "x")  # no template on this schema
    assert read({"q": "a", "a": "b"}, input_key="q", output_key="a") == ("Human: a\nAssistant: ", "b")
    with pytest.raises(UserError, match="none of the schemas"):
        read({"text": "hello"})
