"""Cluster tier fixtures: one real etcd + kube-apiserver per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from operator_helpers import install_crds

from harness import prereq
from harness.apiserver import LocalAPIServer
from harness.k8s_binaries import PrerequisiteMissing, ensure_binaries
from harness.localcluster import LocalCluster, cluster_for_tests


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
    return install_crds(apiserver)


@pytest.fixture(scope="module")  # not session: its kubelet kills the runtime tier's /kubepods pods
def local_cluster() -> Iterator[LocalCluster]:
    """A real single-node cluster: etcd, kube-apiserver, containerd and a kubelet."""
    yield from cluster_for_tests()
