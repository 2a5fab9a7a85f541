"""The install tier's checks on kind (kind-config.yaml): the image built with the
machine's Docker Engine and `kind load`ed, `kubectl apply -k manifests/` with no
overlay (kind has kube-proxy and containerd at its default socket), then the same
checks as tests/install (harness.install_checks) — on a node that lives in a
container with a private cgroup namespace and the systemd cgroup driver.

Needs a Docker Engine that runs privileged containers and the `kind` binary; where
they are missing it skips with that reason (PODTRACE_REQUIRE_KIND=1 makes it fail).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import install_checks, prereq
from harness.docker_engine import docker_client
from harness.install_checks import Installation
from harness.k8s_binaries import PrerequisiteMissing, ensure_binaries
from harness.oci_image import build_busybox_image
from harness.podtrace_image import build_image

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "podtrace-e2e"
NODE = f"{CLUSTER}-control-plane"  # kind's name for a one-node cluster's node
WORKLOAD_IMAGE = "localhost/podtrace-test/busybox:1"


def _kind_prerequisites() -> str | None:
    """Why kind cannot run here, or None."""
    if shutil.which("kind") is None:
        return "the `kind` binary is not installed"
    try:
        client = docker_client()
    except PrerequisiteMissing as exc:
        return str(exc)
    if subprocess.run([client, "info"], capture_output=True).returncode != 0:
        return "no Docker Engine answers (kind runs its nodes as Docker containers)"
    return None


def _kind(*args: str, timeout: float = 900.0) -> str:
    done = subprocess.run(["kind", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"kind {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def kind_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    why = _kind_prerequisites()
    if why is not None:
        prereq.not_on_this_kind_of_machine(
            f"kind cannot run here: {why}; on these machines `docker run --privileged` also "
            "fails (the VM's bounding set lacks CAP_SYS_RESOURCE), and kind's nodes are "
            "privileged containers",
            "PODTRACE_REQUIRE_KIND",
        )
    work = tmp_path_factory.mktemp("kind")
    image = build_image(lambda m: print(f"[image] {m}", flush=True))
    busybox = build_busybox_image(work / "busybox", WORKLOAD_IMAGE)
    _kind("create", "cluster", "--name", CLUSTER, "--config", str(REPO / "kind-config.yaml"))
    try:
        _kind("load", "docker-image", "--name", CLUSTER, image.name)
        _kind("load", "image-archive", "--name", CLUSTER, str(busybox.tar))
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(_kind("get", "kubeconfig", "--name", CLUSTER))
        kubectl = ensure_binaries(kubelet=False).kubectl
        installation = Installation(
            kubectl_argv=[str(kubectl), f"--kubeconfig={kubeconfig}"],
            node_name=NODE,
            workload_image=WORKLOAD_IMAGE,
            kustomization=REPO / "manifests",
        )
        installation.install()
        yield installation
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], capture_output=True)


def test_operator_and_agent_run_as_installed_on_kind(kind_installed: Installation) -> None:
    install_checks.check_running_as_installed(kind_installed)


def test_nodetracer_ready_with_bcc_on_kind(kind_installed: Installation) -> None:
    install_checks.check_nodetracer_ready_with_bcc(kind_installed)


def test_workload_traced_exactly_on_kind(kind_installed: Installation) -> None:
    install_checks.check_workload_traced_exactly(kind_installed)


def test_uninstall_leaves_nothing_on_kind(kind_installed: Installation) -> None:
    install_checks.check_uninstall_leaves_nothing(kind_installed)

