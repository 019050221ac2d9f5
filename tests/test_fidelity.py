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


# --- label blindness and rows with no logit, at the stages ---------------------------------------


def _run_selector_stage(root, config, world):
    """(data dir, selector dir, the worker's result) after the selector stage on `world`, from an untrained mini
    base (seconds)."""
    from seal_ray.checkpoints import Checkpointer
    from seal_ray.distributed import LocalDist
    from seal_ray.models import build_mini_model, save_model
    from seal_ray.pipeline import worker_spec
    from seal_ray.stages import selector
    from seal_ray.stages.base import MAX_POSITIONS
    from seal_ray.stages.common import MODEL_DIR, WORLD_FILE
    from seal_ray.stages.data import LABELS_FILE
    from seal_ray.tokenizer import CharTokenizer

    data_dir, base_dir, selector_dir = root / "data", root / "base", root / "selector"
    for folder in (data_dir, base_dir, selector_dir):
        folder.mkdir(parents=True)
    (data_dir / WORLD_FILE).write_text(json.dumps(world))
    (data_dir / LABELS_FILE).write_text(json.dumps([row["label"] for row in world["ft"]]))
    tokenizer = CharTokenizer()
    save_model(build_mini_model(config.model, tokenizer, 0, MAX_POSITIONS), tokenizer, base_dir / MODEL_DIR)
    spec = worker_spec(config, selector_dir, data_dir=data_dir, base_dir=base_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.resources.torch_threads)  # as a stage's worker runs (executor.run_on_worker)
    try:
        result = selector.worker(spec, LocalDist(), Checkpointer(None), lambda line: None)
    finally:
        torch.set_num_threads(threads)
    return data_dir, selector_dir, result


@pytest.fixture
def blind_config(tiny_overrides, tmp_path):
    from tests.test_baselines import write_safety

    safety = write_safety(tmp_path / "safety.jsonl", 20)
    return load_cell_config(None, [*tiny_overrides, "selector.epochs=1", f"selection.safety_file={safety}",
                                   "selection.safety_fields={prompt: instruction, response: output}"])


def test_permuting_the_hidden_labels_changes_no_selection_only_the_oracle_and_the_metrics(tmp_path, blind_config):
    import dataclasses

    from seal_ray.metrics import selector_quality
    from seal_ray.stages import select
    from seal_ray.stages.common import EXTRA_FILE, KEPT_FILE
    from seal_ray.world import make_world

    world = make_world(blind_config.world, 0)
    labels = [row["label"] for row in world["ft"]]
    permuted = json.loads(json.dumps(world))
    shuffled = labels[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != labels
    for row, label in zip(permuted["ft"], shuffled):
        row["label"] = label
    outputs = {}
    for name, rows in (("true", world), ("permuted", permuted)):
        data_dir, selector_dir, _ = _run_selector_stage(tmp_path / name, blind_config, rows)
        files = {"selector": (selector_dir / "selector.pt").read_bytes()}
        for method in ("seal", "random", "dsir", "safeinstr", "oracle"):
            config = dataclasses.replace(blind_config, selection=dataclasses.replace(blind_config.selection, method=method))
            work_dir = tmp_path / name / method
            work_dir.mkdir()
            select.run(config, data_dir, selector_dir, work_dir, lambda line: None)
            files[method] = (work_dir / KEPT_FILE).read_bytes()
            if (work_dir / EXTRA_FILE).exists():
                files[f"{method}/extra"] = (work_dir / EXTRA_FILE).read_bytes()
        outputs[name] = files
    true, perm = outputs["true"], outputs["permuted"]
    for name in ("selector", "seal", "random", "dsir", "safeinstr", "safeinstr/extra"):
        assert true[name] == perm[name], f"{name} read the hidden labels"
    assert true["oracle"] != perm["oracle"]  # only the oracle reads them
    logits = load_selector(tmp_path / "true" / "selector" / "selector.pt")
    kept = json.loads(true["seal"])
    metric = "selector/auroc_unsafe"
    assert selector_quality(logits, dict(enumerate(labels)), kept)[metric] != \
        selector_quality(logits, dict(enumerate(shuffled)), kept)[metric]


def test_rows_with_no_logit_are_outside_the_softmax_and_get_minus_infinity(tmp_path, tiny_overrides):
    """Over-long rows inserted into D_ft leave every other logit bit-identical to a D_ft without them."""
    from seal_ray.world import make_world

    config = load_cell_config(None, [*tiny_overrides, "selector.epochs=1"])
    world = make_world(config.world, 0)
    long_row = {"prompt": "x" * 200, "response": "y", "task": "harmful", "label": "unsafe"}
    with_long = json.loads(json.dumps(world))
    dropped = [3, 40]  # two: the safe set (20% of |D_ft|, rounded) keeps its size
    for position in dropped:
        with_long["ft"].insert(position, dict(long_row))
    with_long["ft"] = [{**row, "id": i} for i, row in enumerate(with_long["ft"])]
    _, with_dir, _ = _run_selector_stage(tmp_path / "with", config, with_long)
    _, without_dir, _ = _run_selector_stage(tmp_path / "without", config, world)
    full = load_selector(with_dir / "selector.pt")
    plain = load_selector(without_dir / "selector.pt")
    assert full.numel() == len(with_long["ft"]) and torch.isneginf(full).nonzero().flatten().tolist() == dropped
    assert torch.equal(full[torch.isfinite(full)], plain)
    assert json.loads((with_dir / "eligible_ids.json").read_text()) == [
        i for i in range(len(with_long["ft"])) if i not in dropped]
    # AUROC ranks only rows with a logit: the inserted (unsafe-labelled) rows do not count.
    from seal_ray.metrics import selector_quality

    labels = {row["id"]: row["label"] for row in with_long["ft"]}
    plain_labels = {row["id"]: row["label"] for row in world["ft"]}
    assert selector_quality(full, labels, [])["selector/auroc_unsafe"] == \
        selector_quality(plain, plain_labels, [])["selector/auroc_unsafe"]


# --- selector.epoch: cycle_safe (default) | zip_shortest (the reference code's) -----------------------


def test_zip_shortest_ends_an_epoch_with_the_shorter_set_and_cycle_safe_covers_d_ft():
    from seal_ray.batching import CyclingIds, selector_steps

    ft = list(range(100))

    def safe(n: int) -> CyclingIds:
        return CyclingIds(list(range(1000, 1000 + n)), 10, seed=0)

    cycled = list(selector_steps(ft, safe(10), 10, 0, 0, "cycle_safe"))  # a safe set of 10% of D_ft
    assert len(cycled) == 10 and sorted(i for ft_batch, _ in cycled for i in ft_batch) == ft
    assert all(sorted(safe_batch) == list(range(1000, 1010)) for _, safe_batch in cycled)
    zipped = list(selector_steps(ft, safe(10), 10, 0, 0, "zip_shortest"))
    assert len(zipped) == 1  # 10% of the steps, 10% of D_ft seen this epoch
    assert [b for b, _ in zipped] == [b for b, _ in cycled[:1]]
    # A safe set as large as D_ft (the paper's: 112,000 rows each): both rules walk D_ft alike.
    assert [b for b, _ in selector_steps(ft, safe(100), 10, 0, 1, "zip_shortest")] == \
        [b for b, _ in selector_steps(ft, safe(100), 10, 0, 1, "cycle_safe")]


def test_selector_epoch_is_validated_and_only_a_non_default_rule_enters_the_cache_key(tiny_overrides):
    from seal_ray.stages import selector

    with pytest.raises(ConfigError, match="did you mean 'zip_shortest'"):
        load_cell_config(None, [*tiny_overrides, "selector.epoch=zip_short"])
    default = load_cell_config(None, tiny_overrides)
    zipped = load_cell_config(None, [*tiny_overrides, "selector.epoch=zip_shortest"])
    assert default.selector.epoch == "cycle_safe" and "epoch" not in selector.key(default, "d", "b")["selector"]
    assert selector.key(zipped, "d", "b")["selector"]["epoch"] == "zip_shortest"


def test_the_selector_stage_trains_on_fewer_steps_with_zip_shortest_and_a_small_safe_set(tmp_path, tiny_overrides):
    from seal_ray.world import make_world

    tokens = {}
    for rule in ("cycle_safe", "zip_shortest"):
        config = load_cell_config(None, [*tiny_overrides, "selector.epochs=1", "data.safe_fraction=0.1",
                                         f"selector.epoch={rule}"])
        world = make_world(config.world, 0)
        tokens[rule] = _run_selector_stage(tmp_path / rule, config, world)[2]["tokens"]
    # 60 D_ft rows, a safe set of 6, batch 8: cycle_safe makes 8 steps (all of D_ft), zip_shortest 1 step
    # (8 D_ft rows and the 6 safe rows): a fraction of the tokens.
    assert tokens["zip_shortest"] < tokens["cycle_safe"] / 4
