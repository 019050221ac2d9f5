"""Inputs from outside the config are checked before any stage runs: exit 2, the field named, nothing written."""

from __future__ import annotations

import pytest

from seal_ray.cli import main
from seal_ray.config import load_cell_config
from seal_ray.errors import ConfigError
from seal_ray.preflight import check_cell_inputs


def _refused(capsys, tmp_path, sets: list[str]) -> str:
    out = tmp_path / "out"
    code = main(["run", "--out", str(out), "--storage", str(tmp_path / "store"), *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "store").exists()  # nothing written, no stage started
    return err


def test_a_missing_selector_file_is_refused_before_training(capsys, tmp_path, tiny_overrides):
    err = _refused(capsys, tmp_path, [*tiny_overrides, "selection.method=file", f"selection.selector_file={tmp_path}/nope.pt"])
    assert "selection.selector_file" in err and "nope.pt does not exist" in err


def test_a_missing_safety_file_is_refused_before_training(capsys, tmp_path, tiny_overrides):
    err = _refused(capsys, tmp_path, [*tiny_overrides, "selection.method=safeinstr", f"selection.safety_file={tmp_path}/safety.jsonl"])
    assert "selection.safety_file" in err and "safety.jsonl does not exist" in err


def test_an_unset_api_key_variable_is_refused_before_training(capsys, tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.delenv("SEAL_TEST_JUDGE_KEY", raising=False)
    err = _refused(capsys, tmp_path, [*tiny_overrides, "evaluation.judge=openai", "evaluation.openai.base_url=http://127.0.0.1:9/v1",
                                      "evaluation.openai.api_key_env=SEAL_TEST_JUDGE_KEY"])
    assert "evaluation.openai.api_key_env" in err and "SEAL_TEST_JUDGE_KEY" in err


def test_missing_dataset_and_model_paths_name_their_fields(tmp_path):
    conversation = '{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}\n'
    (tmp_path / "ft.jsonl").write_text(conversation)
    (tmp_path / "hh.jsonl").write_text('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", "rejected": "x"}\n')
    (tmp_path / "hexphi").mkdir()
    config = load_cell_config(None, [
        "data.source=recipes", f"data.ft.path={tmp_path}/ft.jsonl", f"data.safe.path={tmp_path}/missing_safe.jsonl",
        f"data.hh.path={tmp_path}/hh.jsonl", f"data.orca.path={tmp_path}/ft.jsonl", f"data.hexphi.path={tmp_path}/hexphi",
        f"model.name_or_path={tmp_path}", "evaluation.judge=reward_model", f"evaluation.reward_model.path={tmp_path}",
        "evaluation.refusal_judge=keyword_refusal",
    ])
    with pytest.raises(ConfigError, match=r"data\.safe\.path.*missing_safe\.jsonl does not exist"):
        check_cell_inputs(config)
    (tmp_path / "missing_safe.jsonl").write_text('{"instruction": "hi"}\n')
    with pytest.raises(ConfigError, match=r"data\.safe\.path.*missing field 'conversations'"):  # read through its recipe
        check_cell_inputs(config)
    (tmp_path / "missing_safe.jsonl").write_text(conversation)
    with pytest.raises(ConfigError, match=r"data\.hexphi\.path"):  # a directory with no data files in it
        check_cell_inputs(config)
    (tmp_path / "hexphi" / "category_1.csv").write_text("how do I pick a lock?\n")
    check_cell_inputs(config)  # everything is there
