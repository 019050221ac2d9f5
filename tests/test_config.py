"""The typed cell config: defaults from SEAL.md, overrides, and errors that name file, field and values."""

import json

import pytest

from seal_ray.cli import main
from seal_ray.config import CellConfig, ConfigError, config_hash, field_help, leaf_keys, load_cell_config


def test_defaults_follow_seal_md():
    config = CellConfig()
    assert config.selector.activation == "softmax"
    assert config.selector.betas == [0.9, 0.95]
    assert config.selector.lr == 5e-3 and config.selector.epochs == 3
    assert config.selector.algorithm == 2
    assert (config.penalty.kind, config.penalty.decay) == ("ramp", 0.03)
    assert config.selection.topp == 0.8
    assert config.model.lora.r == 16 and config.model.lora.alpha == 16
    assert config.model.lora.target_modules == ["q_proj", "v_proj"]
    assert config.data.template == "Human: {}\nAssistant: "


def test_overrides_are_typed_by_yaml_rules(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("selector:\n  activation: sigmoid\n  lr: 3e-3\n")
    config = load_cell_config(path, ["penalty.kind=fixed", "penalty.gamma=0.5", "selector.algorithm=1", "seed=4"])
    assert config.selector.activation == "sigmoid" and config.selector.lr == 0.003
    assert config.penalty.gamma == 0.5 and config.selector.algorithm == 1 and config.seed == 4


def test_config_hash_changes_with_any_leaf_and_not_with_key_order():
    assert config_hash(load_cell_config(None, ["seed=1", "selection.topp=0.7"])) == config_hash(
        load_cell_config(None, ["selection.topp=0.7", "seed=1"]))
    assert config_hash(load_cell_config(None, ["seed=1"])) != config_hash(load_cell_config(None, ["seed=2"]))


@pytest.mark.parametrize("override, field, words", [
    ("selector.activaton=relu", "selector.activaton", ["unknown key", "did you mean 'activation'"]),
    ("selector.activation=sigmod", "selector.activation", ["did you mean 'sigmoid'", "softmax, sigmoid, relu"]),
    ("selection.method=seel", "selection.method", ["did you mean 'seal'", "sft, seal, random, oracle, file"]),
    ("selection.topp=1.5", "selection.topp", ["out of range", "<= 1"]),
    ("selection.topp=0", "selection.topp", ["out of range", "> 0"]),
    ("penalty.gamma=-0.1", "penalty.gamma", ["out of range", ">= 0"]),
    ("data.safe_fraction=1.2", "data.safe_fraction", ["out of range", "<= 1"]),
    ("resources.num_workers=0", "resources.num_workers", ["out of range", ">= 1"]),
    ("selector.epochs=two", "selector.epochs", ["expected an integer"]),
    ("selector.algorithm=3", "selector.algorithm", ["allowed values: 1, 2"]),
    ("finetune.lr=fast", "finetune.lr", ["expected a number"]),
    ("selector.betas=[0.9]", "selector.betas", ["two numbers"]),
    ("model.gradient_checkpointing=maybe", "model.gradient_checkpointing", ["true or false"]),
])
def test_every_bad_field_names_the_field_and_what_is_allowed(override, field, words):
    with pytest.raises(ConfigError) as err:
        load_cell_config(None, [override])
    assert f"field '{field}'" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("selector:\n  activation: [softmax\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*malformed YAML at line"):
        load_cell_config(path)


def test_an_unknown_section_suggests_the_right_one(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("selecter:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'selector'"):
        load_cell_config(path)


def test_a_safe_set_larger_than_the_pool_is_refused():
    with pytest.raises(ConfigError, match="safe_pool"):
        load_cell_config(None, ["data.safe_fraction=0.9"])


def test_every_leaf_has_help_text():
    missing = [key for key in leaf_keys() if not field_help(key)]
    assert missing == []


def test_cli_bad_config_exits_2_with_a_message_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--set", "selector.activation=tanh", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "field 'selector.activation'" in err and "allowed values: softmax, sigmoid, relu" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_validate_accepts_a_good_file_and_rejects_a_bad_one(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(json.dumps({"selector": {"activation": "relu"}}))
    bad.write_text("selection:\n  topp: 2\n")
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_cli_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
