"""Security by construction: no pickle-based loading anywhere in the package, services bound
to 127.0.0.1 by default, Ray's token authentication left on, and a cluster file that opens
no port to the world besides SSH."""

import re
from pathlib import Path

import yaml

from nli_tune import REPO_ROOT

PACKAGE = REPO_ROOT / "nli_tune"
PICKLE_LOADERS = (
    r"torch\.load\(",
    r"\bimport pickle\b",
    r"\bpickle\.",
    r"weights_only\s*=\s*False",
    r"\bjoblib\b",
    r"\bcloudpickle\b",
)


def _code(path: Path) -> str:
    """Source without comments (prose may name what we avoid)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def test_nothing_is_loaded_with_pickle():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        code = _code(path)
        for pattern in PICKLE_LOADERS:
            if re.search(pattern, code):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


def test_services_bind_to_loopback_and_keep_token_auth():
    code = "\n".join(_code(p) for p in PACKAGE.rglob("*.py"))
    assert "0.0.0.0" not in code
    assert re.search(r'dashboard_host="127\.0\.0\.1"', code)  # the search's own local Ray
    assert "RAY_AUTH_MODE" not in code  # never switched off (Ray >= 2.59: token auth on)


def test_cluster_yaml_opens_only_ssh_and_binds_the_dashboard_to_loopback():
    text = (REPO_ROOT / "cluster.yaml").read_text()
    cluster = yaml.safe_load(text)
    group = cluster["provider"].get("security_group")
    if group is not None:  # Ray's default group allows SSH only; a custom one must too
        for rule in group.get("IpPermissions", []):
            assert rule.get("FromPort") == rule.get("ToPort") == 22, rule
    for node in cluster["available_node_types"].values():
        assert "SecurityGroupIds" not in node["node_config"]  # no hand-made open groups
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in text
    # the cluster docs tell how to reach the dashboard: port-forwarding over SSH
    docs = (REPO_ROOT / "docs" / "cluster.md").read_text()
    assert "ray dashboard cluster.yaml" in docs and "ssh -L" in docs
