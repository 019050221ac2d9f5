"""kernels.py: stage processes get CPU kernels pinned to AVX2 on x86, unless the caller chose others."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from seal_ray.errors import UserError
from seal_ray.kernels import PINNED, SWITCH, kernel_env

x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86 CPUs")


@x86
def test_the_pins_apply_unless_a_variable_is_already_set(monkeypatch):
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    assert kernel_env() == PINNED
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert kernel_env()["ATEN_CPU_CAPABILITY"] == "default" and kernel_env()["MKL_CBWR"] == "AVX2"


@x86
def test_native_asks_for_no_pins_and_a_typo_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SEAL_RAY_KERNELS", "native")
    assert kernel_env() == {}
    monkeypatch.setenv("SEAL_RAY_KERNELS", "nativ")
    with pytest.raises(UserError, match="SEAL_RAY_KERNELS='nativ': allowed values are 'pinned'"):
        kernel_env()


@x86
def test_this_test_process_computes_with_the_pinned_kernels():
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "AVX2"  # importing seal_ray pinned it before torch's first use


_CAPABILITY = "import seal_ray, torch; print(torch.backends.cpu.get_cpu_capability())"


@x86
@pytest.mark.skipif("avx2" not in Path("/proc/cpuinfo").read_text(), reason="needs an AVX2 CPU")
def test_importing_seal_ray_pins_the_process_unless_native_is_asked_for():
    env = {k: v for k, v in os.environ.items() if k not in PINNED and k != SWITCH}

    def capability(**extra):
        return subprocess.run([sys.executable, "-c", _CAPABILITY], env=env | extra, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert capability() == "AVX2"  # so `seal-ray run` with isolate_stages: false trains the calibrated draw
    assert capability(ATEN_CPU_CAPABILITY="default") == "DEFAULT"  # a variable set by hand is kept
    native = capability(SEAL_RAY_KERNELS="native")
    assert native != "DEFAULT" and (native == "AVX512") == ("avx512f" in Path("/proc/cpuinfo").read_text())


def test_a_bad_kernel_choice_is_refused_by_the_cli_before_anything_runs(tmp_path, monkeypatch, capsys):
    from seal_ray.cli import main

    monkeypatch.setenv("SEAL_RAY_KERNELS", "fast")  # refused on any machine, not only where pins apply
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert main(["run", "--out", str(tmp_path / "out")]) == 2
    assert "SEAL_RAY_KERNELS='fast': allowed values are 'pinned' (the default) and 'native'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_no_pins_off_x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert kernel_env() == {}


# Run in a child process, whose environment the test chooses (this test process is pinned by conftest).
_BASE_LOSS = """
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import TINY
from seal_ray.config import load_cell_config
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import CellPipeline
from seal_ray.store import StageStore

root = Path(sys.argv[1])
config = load_cell_config(None, [o for o in TINY if "isolate_stages" not in o]
                          + ["base.epochs=3", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4"])
with LocalExecutor(isolate=True) as executor:
    CellPipeline(config, StageStore(root), executor, log=lambda s: None).base_generations()
(marker,) = (root / "stages" / "base").glob("*/_COMPLETE.json")
print(json.loads(marker.read_text())["final_loss"])
"""


def _base_loss(tmp_path, name: str, kernels: dict[str, str]) -> float:
    """The base stage's final loss, trained isolated from a caller whose environment has `kernels`."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED and k != SWITCH} | kernels
    done = subprocess.run([sys.executable, "-c", _BASE_LOSS, str(tmp_path / name)], env=env, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], check=True)
    return float(done.stdout.strip().splitlines()[-1])


@x86
def test_an_isolated_stage_trains_with_the_pinned_kernels_whatever_its_caller_has(tmp_path):
    """The stage's process gets the caller's environment; the pins must be in it (they were not, once)."""
    unset = _base_loss(tmp_path, "unset", {})
    assert _base_loss(tmp_path, "pinned", PINNED) == unset
    if "avx512f" in Path("/proc/cpuinfo").read_text():  # native kernels differ from AVX2 only there
        assert _base_loss(tmp_path, "native", {SWITCH: "native"}) != unset
