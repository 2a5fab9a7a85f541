"""Enrichment against a real containerd: a pod made the way kubelet makes it is
named correctly, its sandbox is recognised, and unknown IDs fall back to the path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.containerd import Containerd, Pod, PodRunner
from harness.oci_image import OCIImage
from podtrace_agent.cri.client import CRIClient
from podtrace_agent.cri.enrich import Enricher
from podtrace_agent.cri.runtime import discover_runtime
from podtrace_api.nodetracer import IdentitySource


@pytest.fixture(scope="module")
def web(pods: PodRunner, busybox_image: OCIImage) -> Iterator[tuple[Pod, str]]:
    pod = pods.run_pod("web-0", "shop", labels={"app": "web"})
    cid = pods.start_container(pod, "app", busybox_image.name, ["/bin/sleep", "3600"])
    yield pod, cid
    pods.remove_pod(pod)


def test_a_running_container(cri: CRIClient, web: tuple[Pod, str], busybox_image: OCIImage) -> None:
    pod, cid = web
    e = Enricher(cri).lookup(cid)
    assert e.source is IdentitySource.CRI and e.reason == ""
    assert (e.pod_name, e.namespace, e.pod_uid) == ("web-0", "shop", pod.uid)
    assert e.container_name == "app"
    assert e.image == busybox_image.name  # the tag, though kubelet passed the image ID
    assert e.image_id == busybox_image.image_id
    assert e.sandbox is False and e.sandbox_id == pod.sandbox_id
    assert e.labels["io.kubernetes.container.name"] == "app"
    assert e.cgroups_path == f"/kubepods/besteffort/pod{pod.uid}/{cid}"
    # The PID is the container's process, in the container's cgroup (cgroup2 here too).
    assert f"0::{e.cgroups_path}\n" in Path(f"/proc/{e.pid}/cgroup").read_text()


def test_the_sandbox_is_flagged(cri: CRIClient, web: tuple[Pod, str]) -> None:
    pod, _ = web
    e = Enricher(cri).lookup(pod.sandbox_id)
    assert e.source is IdentitySource.CRI
    assert e.sandbox is True and e.container_name == ""
    assert (e.pod_name, e.namespace, e.pod_uid) == ("web-0", "shop", pod.uid)
    assert e.cgroups_path == f"/kubepods/besteffort/pod{pod.uid}/{pod.sandbox_id}"
    assert e.pid is not None and Path(f"/proc/{e.pid}").exists()


def test_an_id_the_runtime_does_not_know(cri: CRIClient, web: tuple[Pod, str]) -> None:
    pod, _ = web
    ghost = "f" * 64
    path = f"/kubepods/besteffort/pod{pod.uid}/{ghost}"
    e = Enricher(cri).lookup(ghost, cgroup_path=path)
    assert e.source is IdentitySource.CGROUP_PATH
    assert (e.pod_uid, e.container_id) == (pod.uid, ghost)
    assert e.reason.startswith(f"the runtime at {cri.endpoint} knows no container or pod sandbox")


def test_through_discovery(containerd: Containerd, web: tuple[Pod, str]) -> None:
    _, cid = web
    enricher = Enricher.from_report(discover_runtime([containerd.endpoint]))
    try:
        assert enricher.lookup(cid).container_name == "app"
    finally:
        enricher.close()
