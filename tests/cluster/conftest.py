"""Cluster tier fixtures: one real etcd + kube-apiserver per test session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import prereq
from harness.apiserver import LocalAPIServer
from harness.k8s_binaries import PrerequisiteMissing, ensure_binaries
from harness.localcluster import LocalCluster, cluster_for_tests

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def apiserver() -> Iterator[LocalAPIServer]:
    try:
        binaries = ensure_binaries(kubelet=False)  # this tier needs no node
    except PrerequisiteMissing as exc:
        prereq.missing(str(exc))  # skips, or fails under PODTRACE_REQUIRE_ALL=1
        raise
    with LocalAPIServer(binaries) as server:
        yield server


@pytest.fixture(scope="session")
def crds_installed(apiserver: LocalAPIServer) -> list[str]:
    """Apply crds/ and wait until every CRD is Established; returns the CRD names."""
    if not any(CRDS_DIR.glob("*.yaml")) and not any(CRDS_DIR.glob("*.yml")):
        prereq.missing("crds/ is empty: run make crds")
    applied = apiserver.kubectl(
        "apply", "--server-side", "--field-manager=podtrace-tests", "-o", "name",
        "-k", str(CRDS_DIR),
    )  # fmt: skip
    names = [line.split("/", 1)[1] for line in applied.stdout.split() if line]
    apiserver.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )
    # Established comes before the kinds are in discovery and OpenAPI (explain).
    deadline = time.monotonic() + 60
    for name in names:
        while apiserver.kubectl("explain", name.split(".", 1)[0], check=False).returncode:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} is Established but not published in OpenAPI after 60s")
            time.sleep(0.2)
    return names


@pytest.fixture(scope="module")  # not session: its kubelet kills the runtime tier's /kubepods pods
def local_cluster() -> Iterator[LocalCluster]:
    """A real single-node cluster: etcd, kube-apiserver, containerd and a kubelet."""
    yield from cluster_for_tests()
