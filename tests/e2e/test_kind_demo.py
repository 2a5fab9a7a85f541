"""The demo on a kind cluster (kind-config.yaml): the podtrace image built with
Docker, the operator and the agent DaemonSet from manifests/, the demo workload
traced. Needs a Docker engine and kind; machines without them skip it (the local
single-node cluster in tests/cluster covers the same loop there)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import prereq

REPO = Path(__file__).resolve().parents[2]


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def test_demo_on_kind() -> None:
    if not shutil.which("kind") or not _docker_engine():
        prereq.not_on_this_kind_of_machine(
            "kind needs a Docker engine and the kind binary; this machine has "
            f"docker engine={_docker_engine()}, kind={bool(shutil.which('kind'))}",
            "PODTRACE_REQUIRE_KIND",
        )
    demo = [sys.executable, str(REPO / "scripts" / "demo.py")]
    try:
        up = subprocess.run([*demo, "up"], capture_output=True, text=True, timeout=1800)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        assert "ShellInContainer" in up.stdout
        assert "web-record" in up.stdout and '"defaultAction": "SCMP_ACT_ERRNO"' in up.stdout
    finally:
        subprocess.run([*demo, "down"], capture_output=True, timeout=600)
    assert "podtrace" not in subprocess.run(
        ["kind", "get", "clusters"], capture_output=True, text=True).stdout.split()


@pytest.mark.parametrize("name", ["kind-config.yaml"])
def test_kind_config_is_one_node_with_tracefs(name: str) -> None:
    config = yaml.safe_load((REPO / name).read_text())
    assert config["kind"] == "Cluster"
    [node] = config["nodes"]
    mounts = {m["containerPath"] for m in node.get("extraMounts", [])}
    assert {"/sys/kernel/tracing", "/usr/src"} <= mounts
