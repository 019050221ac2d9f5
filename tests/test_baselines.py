"""The paper's baselines: DSIR (hashed n-gram importance weights) and SafeInstr (safety demonstrations mixed in),
alone and as whole tiny cells."""

import dataclasses
import json

import pytest

from seal_ray.baselines import dsir_keep, dsir_log_weights, safety_count
from seal_ray.config import ConfigError, load_cell_config
from seal_ray.errors import UserError
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import CellPipeline
from seal_ray.stages import data, select
from seal_ray.store import StageStore


def rows(texts: list[tuple[str, str]]) -> list[dict]:
    return [{"id": i, "prompt": p, "response": r} for i, (p, r) in enumerate(texts)]


COOKING = [("how do i bake bread?", "mix flour, water and yeast, then bake it."),
           ("how do i bake a cake?", "mix flour, sugar and eggs, then bake it.")]
UNRELATED = [("who won the match?", "the home team won two to one."),
             ("what is the stock price?", "it closed higher on friday.")]
TARGET = rows([("how do i bake cookies?", "mix flour, butter and sugar, then bake them.")])


def test_dsir_ranks_rows_like_the_target_above_unrelated_ones(tmp_path):
    raw = rows([UNRELATED[0], COOKING[0], UNRELATED[1], COOKING[1]])
    weights = dsir_log_weights(raw, TARGET, tmp_path)
    assert min(weights[1], weights[3]) > max(weights[0], weights[2])
    kept, by_id = dsir_keep(raw, TARGET, 0.5, tmp_path)
    assert kept == [1, 3] and set(by_id) == {0, 1, 2, 3}
    assert list(tmp_path.iterdir()) == []  # the package's scratch files are gone


def test_dsir_breaks_ties_by_the_smaller_id(tmp_path):
    raw = rows([UNRELATED[0], COOKING[0], COOKING[0], COOKING[0]])
    kept, _ = dsir_keep(raw, TARGET, 0.5, tmp_path)
    assert kept == [1, 2]


def write_safety(path, n: int) -> str:
    path.write_text("".join(json.dumps({"instruction": f"harmful request {i}", "output": "I can't help with that."}) + "\n"
                            for i in range(n)))
    return str(path)


def safeinstr_config(tiny_overrides, safety: str, method: str = "safeinstr", *extra: str):
    return load_cell_config(None, tiny_overrides + [
        f"selection.method={method}", f"selection.safety_file={safety}", "selection.safety_fraction=0.1",
        "selection.safety_fields={prompt: instruction, response: output}", *extra,
    ])


def test_safeinstr_keeps_all_of_d_ft_and_adds_the_first_safety_rows_with_fresh_ids(tmp_path, tiny_overrides):
    config = safeinstr_config(tiny_overrides, write_safety(tmp_path / "safety.jsonl", 20))
    data_dir, select_dir = tmp_path / "data", tmp_path / "select"
    data_dir.mkdir(), select_dir.mkdir()
    data.run(config, data_dir)
    meta = select.run(config, data_dir, None, select_dir, log=lambda s: None)
    assert meta == {"kept": 60, "of": 60, "extra": 6}  # round(0.1 x 60)
    assert json.loads((select_dir / select.KEPT_FILE).read_text()) == list(range(60))
    extra = json.loads((select_dir / select.EXTRA_FILE).read_text())
    assert [r["id"] for r in extra] == list(range(60, 66)) and [r["source_id"] for r in extra] == list(range(6))
    assert extra[0] == {"id": 60, "prompt": "harmful request 0", "response": "I can't help with that.", "source_id": 0}


def test_safeinstr_with_too_few_rows_uses_them_all_and_says_so(tmp_path, tiny_overrides):
    config = safeinstr_config(tiny_overrides, write_safety(tmp_path / "safety.jsonl", 2))
    (tmp_path / "data").mkdir(), (tmp_path / "select").mkdir()
    data.run(config, tmp_path / "data")
    said = []
    meta = select.run(config, tmp_path / "data", None, tmp_path / "select", log=said.append)
    assert meta["extra"] == 2 and "fewer than the 6 asked for" in said[0]


def test_the_select_key_follows_the_safety_file_its_fraction_and_dsir_settings(tmp_path, tiny_overrides):
    safety = write_safety(tmp_path / "safety.jsonl", 20)
    config = safeinstr_config(tiny_overrides, safety)
    before = select.key(config, "d", None)
    half = dataclasses.replace(config, selection=dataclasses.replace(config.selection, safety_fraction=0.5))
    assert select.key(half, "d", None) != before
    write_safety(tmp_path / "safety.jsonl", 21)
    assert select.key(config, "d", None) != before
    dsir = load_cell_config(None, tiny_overrides + ["selection.method=dsir"])
    assert select.key(dsir, "d", None) != select.key(load_cell_config(None, tiny_overrides + ["selection.method=dsir",
                                                                                              "selection.dsir_ngrams=1"]), "d", None)


def test_only_seal_methods_need_a_selector(tiny_overrides):
    for method, needed in [("seal", True), ("seal_safeinstr", True), ("sft", False), ("dsir", False), ("random", False)]:
        extra = ["selection.safety_file=x.jsonl"] if "safeinstr" in method else []
        config = load_cell_config(None, tiny_overrides + [f"selection.method={method}", *extra])
        assert select.needs_selector(config) is needed, method
    assert safety_count(48, 0.05) == 2 and safety_count(3, 0.01) == 1


def test_safeinstr_without_a_safety_file_is_a_config_error_outside_the_mini_world(tiny_overrides):
    # the mini world brings its own withheld demonstrations; real data needs a file
    assert load_cell_config(None, tiny_overrides + ["selection.method=seal_safeinstr"]).selection.safety_file is None
    with pytest.raises(ConfigError, match="selection.safety_file"):
        load_cell_config(None, tiny_overrides + ["selection.method=seal_safeinstr", "data.source=recipes"])
    with pytest.raises(ConfigError, match="did you mean 'prompt'"):
        load_cell_config(None, tiny_overrides + ["selection.method=safeinstr", "selection.safety_file=x.jsonl",
                                                 "selection.safety_fields={promt: q}"])


def test_a_safety_file_missing_a_field_stops_the_cli_with_exit_2(tmp_path, tiny_overrides, capsys):
    from seal_ray.cli import main

    bad = tmp_path / "safety.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    args = ["run", "--out", str(tmp_path / "cell"), "--set", "selection.method=safeinstr", "--set", f"selection.safety_file={bad}"]
    for override in tiny_overrides:
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "safety.jsonl" in err and "missing field 'prompt'" in err and "question, answer" in err, err


def test_dsir_safeinstr_and_seal_safeinstr_cells_run_and_train_on_the_extra_rows(tmp_path, tiny_overrides):
    safety = write_safety(tmp_path / "safety.jsonl", 20)
    store = StageStore(tmp_path / "store")
    outcomes = {}
    for method in ("dsir", "safeinstr", "seal_safeinstr"):
        config = safeinstr_config(tiny_overrides, safety, method)
        outcomes[method] = CellPipeline(config, store, LocalExecutor(), log=lambda s: None).run()
    for outcome in outcomes.values():
        assert 0.0 <= outcome.metrics["winrate/hexphi"] <= 100.0
    assert (outcomes["dsir"].stages["select"].meta["kept"], outcomes["dsir"].stages["select"].meta["of"]) == (48, 60)
    assert outcomes["dsir"].stages["finetune"].meta["rows"] == 48
    assert outcomes["safeinstr"].stages["finetune"].meta["rows"] == 60 + 6
    assert outcomes["seal_safeinstr"].stages["finetune"].meta["rows"] == 48 + 5  # round(0.1 x 48)
    assert "selector" in outcomes["seal_safeinstr"].stages and "selector" not in outcomes["safeinstr"].stages
    computed = [e["stage"] for e in store.events() if e["event"] == "computed"]
    assert computed.count("base") == 1 and computed.count("finetune") == 4  # three cells and the shared SFT reference


def test_a_safety_file_that_is_not_there_is_a_user_error(tmp_path, tiny_overrides):
    config = safeinstr_config(tiny_overrides, str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="missing.jsonl.*no such file"):
        select.extra_rows(config, [{"id": 0}], [0], log=print)
