"""The install tier: podtrace's image, built from the Dockerfile with a real Docker
Engine, imported into the local cluster's containerd, and `kubectl apply -k` of
manifests/ (through a small overlay for what this cluster lacks) — the operator
Deployment and the agent DaemonSet then run as pods under the real kubelet, placed by
the real scheduler and controllers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import prereq
from harness.docker_engine import DockerError
from harness.install_checks import Installation
from harness.install_overlay import Heartbeats, write_overlay
from harness.k8s_binaries import PrerequisiteMissing
from harness.kubelet import node_ip
from harness.localcluster import LocalCluster, cluster_for_tests
from harness.oci_image import import_archive
from harness.podtrace_image import BuiltImage, build_image


@pytest.fixture(scope="session")
def podtrace_image() -> BuiltImage:
    """podtrace/podtrace:<version>, built (layers cached) from the Dockerfile."""
    prereq.need_root("the install tier (a private dockerd, containerd, kubelet)")
    try:
        image = build_image(lambda m: print(f"[image] {m}", flush=True))
    except PrerequisiteMissing as exc:
        prereq.missing(str(exc))
    except DockerError as exc:
        pytest.fail(f"building the image failed: {exc}", pytrace=False)
    print(f"[image] {image.name}: {image.size_bytes / 2**20:.0f} MiB, "
          f"built in {image.build_seconds:.0f}s", flush=True)  # fmt: skip
    return image


def installed_on(
    cluster: LocalCluster, image: BuiltImage, overlay_dir: Path,
    heartbeats: Heartbeats | None = None,
) -> Iterator[Installation]:
    """The image into every node's containerd, then `kubectl apply -k` of the overlay;
    uninstalled after, unless a test did."""
    assert cluster.apiserver is not None
    began = time.monotonic()
    for node in cluster.nodes:
        assert node.containerd is not None
        import_archive(image.tar, node.containerd.socket)
    imported = time.monotonic() - began
    overlay = write_overlay(overlay_dir, node_ip(), cluster.apiserver.port, cluster.cri_socket_dir,
                            cluster.seccomp_dirs, heartbeats)
    installation = Installation(
        kubectl_argv=[
            str(cluster.apiserver.binaries.kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
        ],
        node_name=cluster.node_name,
        workload_image=cluster.image,
        kustomization=overlay,
        seccomp_dirs=[node.seccomp_dir for node in cluster.nodes],
    )
    installation.timings["containerd image import"] = imported
    installation.install()
    print(
        f"\n[install] {image.name} {image.size_bytes / 2**20:.0f} MiB on "
        f"{len(cluster.nodes)} node(s); "
        + "; ".join(f"{k} {v:.1f}s" for k, v in installation.timings.items()),
        flush=True,
    )
    try:
        yield installation
    finally:
        if not installation.uninstalled:
            installation.uninstall(check=False)


@pytest.fixture(scope="module")
def in_cluster() -> Iterator[LocalCluster]:
    """The local cluster with scheduler, controller-manager and a pod network."""
    yield from cluster_for_tests(in_cluster=True)


@pytest.fixture(scope="module")
def installed(
    in_cluster: LocalCluster, podtrace_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    yield from installed_on(in_cluster, podtrace_image, tmp_path_factory.mktemp("overlay"))


@pytest.fixture(scope="module", params=["host-cgroupns", "own-cgroupns"])
def two_nodes(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Two nodes, each with its own containerd, kubelet and cgroup root; in the host's
    cgroup namespace, or each in its own rooted at its cgroup root (as a kind node)."""
    yield from cluster_for_tests(nodes=2, cgroupns=request.param == "own-cgroupns")


@pytest.fixture(scope="module")
def installed_on_two_nodes(
    two_nodes: LocalCluster, podtrace_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    # Short heartbeats: the node fault tests see an agent found silent in seconds.
    yield from installed_on(two_nodes, podtrace_image, tmp_path_factory.mktemp("overlay"),
                            Heartbeats())
