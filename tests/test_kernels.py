"""kernels.py: stage processes get CPU kernels pinned to AVX2 on x86, unless the caller chose others."""

import platform
from pathlib import Path

import pytest

from seal_ray.kernels import PINNED, kernel_env

x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86 CPUs")


@x86
def test_the_pins_apply_unless_a_variable_is_already_set(monkeypatch):
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    assert kernel_env() == PINNED
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert kernel_env()["ATEN_CPU_CAPABILITY"] == "default" and kernel_env()["MKL_CBWR"] == "AVX2"


def test_no_pins_off_x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert kernel_env() == {}


def _base_loss(tmp_path, name: str) -> float:
    import json

    from conftest import TINY
    from seal_ray.config import load_cell_config
    from seal_ray.executor import LocalExecutor
    from seal_ray.pipeline import CellPipeline
    from seal_ray.store import StageStore

    config = load_cell_config(None, [o for o in TINY if "isolate_stages" not in o]
                              + ["base.epochs=3", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4"])
    with LocalExecutor(isolate=True) as executor:
        outcome = CellPipeline(config, StageStore(tmp_path / name), executor, log=lambda s: None)
        outcome.base_generations()
    (marker,) = (tmp_path / name / "stages" / "base").glob("*/_COMPLETE.json")
    return json.loads(marker.read_text())["final_loss"]


@x86
def test_an_isolated_stage_trains_with_the_pinned_kernels_whatever_its_caller_has(tmp_path, monkeypatch):
    """The stage's process gets the caller's environment; the pins must be in it (they were not, once)."""
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    unset = _base_loss(tmp_path, "unset")
    for name, value in PINNED.items():
        monkeypatch.setenv(name, value)
    assert _base_loss(tmp_path, "pinned") == unset
    if "avx512f" in Path("/proc/cpuinfo").read_text():  # native kernels differ from AVX2 only there
        for name, value in {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"}.items():
            monkeypatch.setenv(name, value)
        assert _base_loss(tmp_path, "native") != unset
