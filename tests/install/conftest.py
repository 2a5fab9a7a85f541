"""The install tier: podtrace's image, built from the Dockerfile with a real Docker
Engine, imported into the local cluster's containerd, and `kubectl apply -k` of
manifests/ (through a small overlay for what this cluster lacks) — the operator
Deployment and the agent DaemonSet then run as pods under the real kubelet, placed by
the real scheduler and controllers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from harness import prereq
from harness.docker_engine import DockerError
from harness.install_checks import Installation
from harness.install_overlay import write_overlay
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


@pytest.fixture(scope="module")
def in_cluster() -> Iterator[LocalCluster]:
    """The local cluster with scheduler, controller-manager and a pod network."""
    yield from cluster_for_tests(in_cluster=True)


@pytest.fixture(scope="module")
def installed(
    in_cluster: LocalCluster, podtrace_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    cluster = in_cluster
    assert cluster.containerd is not None and cluster.apiserver is not None
    began = time.monotonic()
    import_archive(podtrace_image.tar, cluster.containerd.socket)
    imported = time.monotonic() - began
    overlay = write_overlay(
        tmp_path_factory.mktemp("overlay"), node_ip(), cluster.apiserver.port,
        cluster.containerd.socket,
    )  # fmt: skip
    installation = Installation(
        kubectl_argv=[
            str(cluster.apiserver.binaries.kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
        ],
        node_name=cluster.node_name,
        workload_image=cluster.image,
        kustomization=overlay,
    )
    installation.timings["containerd image import"] = imported
    installation.install()
    print(
        f"\n[install] {podtrace_image.name} {podtrace_image.size_bytes / 2**20:.0f} MiB; "
        + "; ".join(f"{k} {v:.1f}s" for k, v in installation.timings.items()),
        flush=True,
    )
    try:
        yield installation
    finally:
        if not installation.uninstalled:
            installation.uninstall(check=False)
