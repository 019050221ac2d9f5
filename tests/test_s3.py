"""Sweeps on S3-compatible storage: a moto server on the loopback address, no other network.

Covers the stage cache (stages uploaded, marker last), resume (a lost record is recomputed from cached
stages), and loading results on a machine with no local copy of anything.
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seal_ray.results import load
from seal_ray.store import StageStore
from seal_ray.sweep import resume_sweep, run_sweep
from seal_ray.sweep_spec import load_sweep

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


@pytest.fixture
def s3_bucket(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for var, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                           "SEAL_RAY_CACHE": str(tmp_path / "cache-a")}.items():
            monkeypatch.setenv(var, value)
        import boto3

        client = boto3.client("s3")
        for _ in range(50):
            try:
                client.create_bucket(Bucket="seal-runs")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.2)
        yield client, "s3://seal-runs/team/study"
    finally:
        server.kill()
        server.wait()


def test_a_sweep_on_s3_caches_stages_resumes_and_loads_without_a_local_copy(s3_bucket, tmp_path, monkeypatch):
    client, uri = s3_bucket
    spec = load_sweep(REPO / "sweeps" / "smoke.yaml")
    frame = run_sweep(spec, uri, log=lambda s: None)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="seal-runs", Prefix="team/study/")["Contents"]]
    assert any(k.startswith("team/study/stages/base/") and k.endswith("_COMPLETE.json") for k in keys)
    assert any(k.endswith("model.safetensors") for k in keys)
    assert "team/study/sweeps/smoke/manifest.json" in keys

    # A lost result: resume recomputes that cell from the cached stages, downloading them to a fresh machine.
    lost = next(k for k in keys if k.startswith("team/study/sweeps/smoke/cells/"))
    client.delete_object(Bucket="seal-runs", Key=lost)
    monkeypatch.setenv("SEAL_RAY_CACHE", str(tmp_path / "cache-b"))  # nothing mirrored locally
    computed_before = [e for e in StageStore(uri).events() if e["event"] == "computed"]
    frame = resume_sweep("smoke", uri, log=lambda s: None)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}
    computed_after = [e for e in StageStore(uri).events() if e["event"] == "computed"]
    assert computed_after == computed_before  # every stage came from the S3 cache

    monkeypatch.setenv("SEAL_RAY_CACHE", str(tmp_path / "cache-c"))
    again = load(f"{uri}/sweeps/smoke")
    assert list(again["status"]) == ["done"] * 3
    assert again["winrate/hexphi"].notna().all()
