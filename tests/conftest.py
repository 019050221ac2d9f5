import os
from pathlib import Path

import pytest

# Importing seal_ray pins this process's CPU kernels (seal_ray/kernels.py) before its first torch computation,
# so stages the tests run inline compute as the isolated ones and Ray's workers do (test_kernels checks it).
from seal_ray.config import load_cell_config

REPO = Path(__file__).resolve().parents[1]
# The official SEAL selector (real data, ../shared/data/), copied into the repo so a clean clone anywhere
# tests against it; its sha256 is pinned so the copy cannot drift from the original.
OFFICIAL_SELECTOR = REPO / "tests" / "data" / "official_selector_llama3.pt"
OFFICIAL_SELECTOR_SHA256 = "d8e3ea9734d65709e5fd66def56f4841ea3a5b0831caa8cdfed3439c44a9221e"

# A world and model small enough that a whole cell runs in seconds on one core.
TINY = [
    "world.n_ft=60", "world.n_base=120", "world.safe_pool=40", "world.n_test_hh=8", "world.n_test_orca=6",
    "world.hexphi_per_category=1", "world.n_test_xstest=4", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
    "base.epochs=1", "base.batch_size=16", "selector.epochs=2", "selector.batch_size=8",
    "finetune.epochs=1", "finetune.batch_size=8", "generation.max_new_tokens=8", "generation.batch_size=16",
    # Stages in this process: a fresh process per stage costs ~4 s (tests/test_isolation.py covers that path).
    "resources.isolate_stages=false",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_config():
    return load_cell_config(None, TINY)


@pytest.fixture(scope="session")
def official_selector_path() -> Path:
    import hashlib

    assert OFFICIAL_SELECTOR.is_file(), f"the official selector file is missing: {OFFICIAL_SELECTOR}"
    assert hashlib.sha256(OFFICIAL_SELECTOR.read_bytes()).hexdigest() == OFFICIAL_SELECTOR_SHA256
    return OFFICIAL_SELECTOR


@pytest.fixture(autouse=True)
def _no_fault_injection(monkeypatch):
    monkeypatch.delenv("SEAL_RAY_FAULT", raising=False)
    monkeypatch.delenv("SEAL_RAY_FAULT_ONCE", raising=False)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
