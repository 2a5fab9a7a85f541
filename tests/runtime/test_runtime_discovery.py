"""Runtime discovery against a real containerd: found through the configured
endpoint, through a host root, and the reasons for what stands in its way."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.containerd import Containerd, StartContainerd
from podtrace_agent.cri.endpoints import KNOWN_SOCKETS
from podtrace_agent.cri.runtime import discover_runtime


def _containerd_version() -> str:
    # "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[2]


def test_finds_this_containerd_through_the_configured_endpoint(containerd: Containerd) -> None:
    report = discover_runtime([containerd.endpoint])
    assert report.found, report.message
    assert (report.name, report.api_version) == ("containerd", "v1")
    assert report.version == _containerd_version()
    assert report.endpoint == containerd.endpoint
    assert report.candidates == ()  # the configured endpoint is tried first
    status = report.to_status().to_wire()
    assert status == {
        "name": "containerd",
        "version": report.version,
        "apiVersion": "v1",
        "endpoint": containerd.endpoint,
        "candidates": [],
    }


def test_an_empty_directory_in_front_is_reported_and_passed_over(
    containerd: Containerd, tmp_path: Path
) -> None:
    # What a bind mount of a socket that did not exist yet leaves (minikube).
    empty = tmp_path / "containerd.sock"
    empty.mkdir()
    report = discover_runtime([str(empty), containerd.endpoint])
    assert report.endpoint == containerd.endpoint
    (first,) = report.candidates
    assert first.endpoint == f"unix://{empty}"
    assert first.reason.startswith("is an empty directory, not a socket")


@pytest.fixture
def host_root(containerd: Containerd, tmp_path: Path) -> Iterator[Path]:
    """The host's containerd socket bind-mounted where a DaemonSet with the host's /
    at /host sees it."""
    root = tmp_path / "host"
    target = root / KNOWN_SOCKETS[0][0].lstrip("/")
    target.parent.mkdir(parents=True)
    target.touch()
    subprocess.run(["mount", "--bind", str(containerd.socket), str(target)], check=True)
    yield root
    subprocess.run(["umount", str(target)], check=True)


def test_finds_the_default_socket_under_the_host_root(host_root: Path) -> None:
    report = discover_runtime(host_root=str(host_root))
    assert report.found, report.message
    assert report.name == "containerd"
    assert report.endpoint == f"unix://{host_root}/run/containerd/containerd.sock"
    # The same path without the host root is tried first and reported.
    assert [c.endpoint for c in report.candidates] == ["unix:///run/containerd/containerd.sock"]


def test_containerd_without_its_cri_plugin_is_named_with_the_fix(
    start_containerd: StartContainerd,
) -> None:
    # containerd as Docker installs it: disabled_plugins = ["cri"].
    plain = start_containerd(with_image=False, disabled_plugins=("io.containerd.grpc.v1.cri",))
    report = discover_runtime([plain.endpoint])
    first = report.candidates[0]
    assert first.endpoint == plain.endpoint
    assert first.reason.startswith("serves gRPC but not CRI runtime.v1")
    assert 'remove "cri" from disabled_plugins' in first.reason
