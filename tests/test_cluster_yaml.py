"""cluster.yaml is a valid Ray cluster-launcher file (checked against Ray's autoscaler schema)."""

import subprocess
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_passes_rays_autoscaler_schema():
    config = yaml.safe_load(CLUSTER.read_text())
    # What `ray up` does before launching: fill the provider's defaults, then check the schema.
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])


def test_the_schema_check_catches_a_broken_file():
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    with pytest.raises(Exception, match="min_workers|zero"):
        validate_config(prepare_config(config))


def test_the_dashboard_is_not_exposed_beyond_the_head():
    config = yaml.safe_load(CLUSTER.read_text())
    assert all("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"] if "ray start" in c)


def test_a_failed_nfs_mount_fails_the_node_setup(tmp_path):
    """Run the mount command with a `mount` that fails: the command (so the node's setup) must fail too."""
    config = yaml.safe_load(CLUSTER.read_text())
    [command] = [c for c in config["initialization_commands"] if "mount" in c]
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {"sudo": 'case "$1" in mkdir) exit 0;; esac; exec "$@"', "mountpoint": "exit 1",
                       "mount": "echo 'mount.nfs4: Connection timed out' >&2; exit 32"}.items():
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)
    failed = subprocess.run(["sh", "-c", command], env={"PATH": f"{stubs}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert failed.returncode != 0 and "Connection timed out" in failed.stderr
    (stubs / "mount").write_text("#!/bin/sh\nexit 0\n")
    assert subprocess.run(["sh", "-c", command], env={"PATH": f"{stubs}:/usr/bin:/bin"}).returncode == 0
