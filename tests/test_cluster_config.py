"""cluster.yaml passes Ray's own cluster-launcher schema, and keeps the promises the README makes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from .conftest import REPO


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_schema(cluster):
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)  # the file as written
    validate_config(prepare_config(cluster))  # and with the launcher's defaults filled in, as `ray up` does


def test_schema_catches_a_typo(cluster):
    broken = {**cluster, "available_node_types": {**cluster["available_node_types"]}}
    broken["available_node_types"]["head"] = {**cluster["available_node_types"]["head"], "max_wokers": 1}
    with pytest.raises(jsonschema.ValidationError, match="max_wokers"):
        validate_config(prepare_config(broken))


def test_head_on_demand_gpu_workers_spot_from_zero(cluster):
    nodes = cluster["available_node_types"]
    head = nodes[cluster["head_node_type"]]["node_config"]
    assert "InstanceMarketOptions" not in head
    gpu_groups = [n for n in nodes.values() if n.get("resources", {}).get("gpu_node")]
    assert gpu_groups
    for group in gpu_groups:
        assert group["min_workers"] == 0 and group["max_workers"] > 0
        assert group["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "--dashboard-host=127.0.0.1" in " ".join(cluster["head_start_ray_commands"])


def test_every_node_starts_with_token_auth_and_the_token(cluster):
    starts = [*cluster["head_start_ray_commands"], *cluster["worker_start_ray_commands"]]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_only_ssh_is_reachable_from_outside_the_cluster(cluster):
    """#13, item 13: every node's metrics port (8080) listens on all interfaces without auth."""
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    group = cluster["provider"]["security_group"]
    rules = _create_default_inbound_rules({"sg-lookbook-miner"}, group["IpPermissions"])  # what `ray up` opens
    from_outside = [r for r in rules if r.get("IpRanges") or r.get("Ipv6Ranges") or r.get("PrefixListIds")]
    assert [(r["FromPort"], r["ToPort"]) for r in from_outside] == [(22, 22)]
    assert group["GroupName"] and not any(
        "SecurityGroupIds" in n["node_config"] for n in cluster["available_node_types"].values()
    )


def test_gpu_nodes_swap_in_the_gpu_extras_faiss(cluster):
    """#14: faiss-cpu was installed everywhere, so the GPU index code never ran on GPU nodes."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (cpu,), (gpu,) = extras["cpu"], extras["gpu"]
    assert f'"{cpu}"' in " ".join(cluster["setup_commands"])  # every node first
    for name, group in cluster["available_node_types"].items():
        swap = " ".join(group.get("worker_setup_commands", []))
        if group.get("resources", {}).get("gpu_node"):
            assert "uninstall -q -y faiss-cpu" in swap and f'"{gpu}"' in swap, name
        else:
            assert "faiss" not in swap, name
