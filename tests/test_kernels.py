"""kernels.py: stage processes get CPU kernels pinned to AVX2 on x86, unless the caller chose others."""

import platform
from pathlib import Path

import pytest

from seal_ray.executor import _StageServer
from seal_ray.kernels import PINNED, kernel_env

x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the pins are for x86 CPUs")


@x86
def test_the_pins_apply_unless_a_variable_is_already_set(monkeypatch):
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    assert kernel_env() == PINNED
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert kernel_env()["ATEN_CPU_CAPABILITY"] == "default" and kernel_env()["MKL_CBWR"] == "AVX2"


@x86
def test_the_stage_server_imports_torch_with_avx2_kernels(monkeypatch):
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    server = _StageServer()
    process = server.get()
    try:
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert b"ATEN_CPU_CAPABILITY=avx2" in environ and b"MKL_CBWR=AVX2" in environ
    finally:
        server.stop()


def test_no_pins_off_x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert kernel_env() == {}
