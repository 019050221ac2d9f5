"""The bad-input catalogue: each gives a message naming the file and field, exit code 2, no traceback,
and nothing written."""

import pickle
from pathlib import Path

import pytest
import torch

from seal_ray.cli import main

SWEEP_OK = """name: s
base: {world: {n_ft: 60}}
seeds: 1
ablations:
  activation:
    selector.activation: [softmax]
"""


def _run_sweep_file(tmp_path, text, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    storage = tmp_path / "storage"
    code = main(["sweep", "run", str(path), "--storage", str(storage)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert "sweep.yaml" in err
    assert not (storage / "sweeps").exists() and not (storage / "stages").exists()
    return err


@pytest.mark.parametrize("text, words", [
    ("name: s\nbase: {world: {n_ft: 60}\n", ["malformed YAML at line"]),
    (SWEEP_OK + "sedes: 2\n", ["field 'sedes'", "did you mean 'seeds'"]),
    (SWEEP_OK.replace("world: {n_ft: 60}", "world: {n_fts: 60}"), ["field 'world.n_fts'", "did you mean 'n_ft'"]),
    (SWEEP_OK.replace("seeds: 1", "seeds: three"), ["field 'seeds'", "number of seeds"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "selector.activation: [softmax, tanhh]"),
     ["field 'selector.activation'", "allowed values: softmax, sigmoid, relu"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "selection.method: [seel]"),
     ["field 'selection.method'", "did you mean 'seal'"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "selection.topp: [0.8, 1.5]"), ["field 'selection.topp'", "<= 1"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "penalty.gamma: [-0.5]"), ["field 'penalty.gamma'", ">= 0"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "data.safe_fraction: [2.0]"), ["field 'data.safe_fraction'", "<= 1"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "resources.num_workers: [0]"), ["field 'resources.num_workers'", ">= 1"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "selector.activaton: [relu]"),
     ["'selector.activaton' is not a config key", "did you mean 'selector.activation'"]),
    (SWEEP_OK.replace("selector.activation: [softmax]", "selector.lr: 0.1"), ["expected a non-empty list"]),
    (SWEEP_OK + "baselines: [sft, dsri]\n", ["field 'baselines'", "allowed values"]),
    (SWEEP_OK + "search: {metric: winrate/hh, space: {selector.lr: {type: logunifrom, low: 0.001, high: 0.1}}}\n",
     ["field 'search.space.selector.lr'", "did you mean 'loguniform'"]),
    (SWEEP_OK + "tracking_url: ./mlruns\n", ["field 'tracking_url'", "did you mean 'tracking_uri'"]),
    (SWEEP_OK + "tracking_uri: [a]\n", ["field 'tracking_uri'", "expected an MLflow tracking URI"]),
])
def test_bad_sweep_files_are_stopped_at_the_door(tmp_path, capsys, text, words):
    err = _run_sweep_file(tmp_path, text, capsys)
    for word in words:
        assert word in err, err


def test_validate_checks_every_shipped_sweep_and_names_a_bad_one(tmp_path, capsys):
    shipped = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
    assert len(shipped) >= 7
    assert main(["validate", *shipped]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(SWEEP_OK.replace("selector.activation: [softmax]", "selector.activation: [softmx]"))
    assert main(["validate", str(bad)]) == 2
    assert "did you mean 'softmax'" in capsys.readouterr().err


@pytest.mark.parametrize("payload, words", [
    (torch.zeros(3, 4), ["1-D"]),
    (torch.arange(10), ["float32"]),
    ({"logits": torch.zeros(3)}, ["expected a 1-D float tensor"]),
    (torch.tensor([0.5, float("nan"), 1.0]), ["NaN or +infinite", "position 1"]),
    (torch.tensor([float("inf"), 0.5]), ["NaN or +infinite", "position 0"]),  # -inf is allowed: a row with no logit
])
def test_bad_selector_files_are_refused(tmp_path, capsys, payload, words):
    path = tmp_path / "sel.pt"
    torch.save(payload, path)
    out = tmp_path / "ids.json"
    assert main(["select", "--selector", str(path), "--topp", "0.8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sel.pt" in err and all(w in err for w in words) and "Traceback" not in err
    assert not out.exists()


def test_a_text_file_given_as_selector_is_refused_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "sel.pt"
    path.write_text("id,logit\n0,0.5\n")
    out = tmp_path / "ids.json"
    assert main(["select", "--selector", str(path), "--topp", "0.8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sel.pt" in err and "not a tensor file" in err and "Traceback" not in err
    assert not out.exists()


def test_a_sweep_over_a_selector_file_with_nan_logits_is_refused_before_anything_is_written(tmp_path, capsys):
    selector = tmp_path / "sel.pt"
    torch.save(torch.tensor([0.1] * 59 + [float("nan")]), selector)
    err = _run_sweep_file(tmp_path, SWEEP_OK.replace("selector.activation: [softmax]", "selection.topp: [0.5]")
                          .replace("base: {world: {n_ft: 60}}",
                                   f"base: {{world: {{n_ft: 60}}, selection: {{method: file, selector_file: {selector}}}}}"),
                          capsys)
    assert "field 'selection.selector_file'" in err and "sel.pt" in err and "NaN or +infinite" in err


def test_a_pickle_payload_selector_is_refused_by_the_cli(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    assert main(["select", "--selector", str(path), "--topp", "0.8", "--out", str(tmp_path / "ids.json")]) == 2
    captured = capsys.readouterr()
    assert "weights_only" in captured.err and "this must never run" not in captured.out


def test_select_on_the_official_selector_keeps_topk_and_warns_on_length(tmp_path, capsys, official_selector_path):
    import json

    out = tmp_path / "ids.json"
    assert main(["select", "--selector", str(official_selector_path), "--topp", "0.8", "--out", str(out),
                 "--dataset-size", "112000"]) == 0
    captured = capsys.readouterr()
    kept = json.loads(out.read_text())
    logits = torch.load(official_selector_path, weights_only=True, map_location="cpu")
    assert len(kept) == 89_520 and kept == sorted(torch.topk(logits.detach(), 89_520).indices.tolist())
    assert "111900 logits but the dataset has 112000 rows" in captured.err


def test_topp_out_of_range_on_the_cli(tmp_path, capsys, official_selector_path):
    assert main(["select", "--selector", str(official_selector_path), "--topp", "1.5", "--out", str(tmp_path / "x.json")]) == 2
    assert "(0, 1]" in capsys.readouterr().err
