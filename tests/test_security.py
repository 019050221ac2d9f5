"""Security: the judge's API key never reaches disk, logs or results; no unsafe deserialisation in the source."""

import ast
import uuid
from pathlib import Path

import pytest

from fake_judge_server import FakeJudgeServer, always
from seal_ray.cli import main

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "SEAL_RAY_TEST_JUDGE_KEY"


def _run_cell(tmp_path, tiny_overrides, server, *extra) -> int:
    args = ["run", "--out", str(tmp_path / "out"), "--storage", str(tmp_path / "storage")]
    for override in [*tiny_overrides, "evaluation.judge=openai", f"evaluation.openai.base_url={server.base_url}",
                     f"evaluation.openai.api_key_env={KEY_ENV}", "evaluation.openai.backoff_s=0.001", *extra]:
        args += ["--set", override]
    return main(args)


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def secret(monkeypatch) -> str:
    value = f"sk-seal-ray-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, value)
    return value


def test_the_api_key_reaches_the_judge_server_and_nothing_else(tmp_path, tiny_overrides, secret, capsys):
    with FakeJudgeServer(always("Output (a)")) as server:
        assert _run_cell(tmp_path, tiny_overrides, server) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out and secret not in captured.err
    assert _files_holding(tmp_path, secret) == []
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert {seen["authorization"] for seen in server.seen} == {f"Bearer {secret}"}


def test_a_server_echoing_the_key_in_bad_replies_does_not_leak_it(tmp_path, tiny_overrides, secret, capsys):
    def echo_key(instruction, a, b):
        return f"Your key is {secret}"  # malformed (no verdict) and hostile

    with FakeJudgeServer(echo_key) as server:
        assert _run_cell(tmp_path, tiny_overrides, server, "evaluation.openai.retries=0") == 1
    captured = capsys.readouterr()
    assert "comparisons got no verdict" in captured.err
    assert secret not in captured.out and secret not in captured.err
    assert _files_holding(tmp_path, secret) == []


# --- static checks of the package source ------------------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_loads(source: str) -> list[str]:
    """'line N: why' for each deserialisation that could run code hidden in a file."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in PICKLE_MODULES:
            if any(alias.name in ("load", "loads", "Unpickler") for alias in node.names):
                problems.append(f"line {node.lineno}: imports {node.module}'s unpickling")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        module, _, attr = name.rpartition(".")
        if module in PICKLE_MODULES and attr in ("load", "loads", "Unpickler"):
            problems.append(f"line {node.lineno}: {name}() unpickles")
        if module == "yaml" and attr in ("unsafe_load", "full_load", "unsafe_load_all", "full_load_all"):
            problems.append(f"line {node.lineno}: {name}()")
        if module == "yaml" and attr in ("load", "load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rpartition(".")[2] not in SAFE_YAML_LOADERS:
                problems.append(f"line {node.lineno}: {name}() without a SafeLoader (use yaml.safe_load)")
        if name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                problems.append(f"line {node.lineno}: torch.load() without weights_only=True")
    return problems


def test_the_static_check_catches_unsafe_loads():
    bad = ("import pickle, torch, yaml\npickle.load(f)\nyaml.load(s)\ntorch.load(p)\n"
           "torch.load(p, weights_only=False)\nyaml.load(s, Loader=yaml.FullLoader)\n")
    assert len(unsafe_loads(bad)) == 5
    good = "yaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\ntorch.load(\n  p,\n  weights_only=True)\n"
    assert unsafe_loads(good) == []


def test_the_package_source_never_unpickles_untrusted_files():
    problems = []
    for package in ("seal_ray", "analysis"):
        for path in sorted((REPO / package).rglob("*.py")):
            problems += [f"{path.relative_to(REPO)} {p}" for p in unsafe_loads(path.read_text())]
    assert problems == []
