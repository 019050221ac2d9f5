"""cluster.yaml is a valid Ray cluster-launcher file (checked against Ray's autoscaler schema)."""

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
