"""containerd goes away and comes back: enrichment says so and recovers, and the
containers keep running meanwhile."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from harness.containerd import PodRunner, StartContainerd
from harness.oci_image import OCIImage
from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.client import CRIClient
from podtrace_agent.cri.endpoints import RuntimeReport
from podtrace_agent.cri.enrich import Enricher
from podtrace_agent.cri.runtime import discover_runtime
from podtrace_agent.cri.watch import RuntimeWatch
from podtrace_api.nodetracer import IdentitySource


def test_degrades_to_path_identity_and_recovers(
    start_containerd: StartContainerd, busybox_image: OCIImage
) -> None:
    cd = start_containerd()  # its own: this test stops it
    with CRIClient(cd.endpoint, timeout=2.0) as cri:
        pods = PodRunner(cri, cd.workdir / "pods")
        pod = pods.run_pod("api-0", "shop")
        cid = pods.start_container(pod, "server", busybox_image.name, ["/bin/sleep", "3600"])
        warm = Enricher(cri)
        before = warm.lookup(cid)
        assert before.source is IdentitySource.CRI and before.pid is not None

        cd.stop()
        os.kill(before.pid, 0)  # the container outlives its runtime
        # An agent that (re)starts now only has the cgroup path.
        cold = Enricher(cri, retry_interval=0.5)
        degraded = cold.lookup(cid, cgroup_path=before.cgroups_path)
        assert degraded.source is IdentitySource.CGROUP_PATH
        assert (degraded.pod_uid, degraded.container_id) == (pod.uid, cid)
        assert degraded.reason.startswith(
            f"runtime unreachable: CRI ContainerStatus on {cd.endpoint} failed: UNAVAILABLE"
        )
        assert warm.lookup(cid) == before  # what was learned stays

        cd.start()
        deadline = time.monotonic() + 15.0
        while (e := cold.lookup(cid, cgroup_path=before.cgroups_path)).source is not (
            IdentitySource.CRI
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert e.source is IdentitySource.CRI, e.reason
        assert (e.pod_name, e.container_name, e.pid) == ("api-0", "server", before.pid)
        assert cri.container_status(cid).status.state == api_pb2.CONTAINER_RUNNING
        pods.remove_pod(pod)


def test_runtime_watch_sees_it_go_and_come_back(start_containerd: StartContainerd) -> None:
    """The agent's runtime watch (cri/watch.py) against the real containerd: unreachable
    with the CRI error while it is stopped, found again (on_back) when it answers."""
    cd = start_containerd(with_image=False)  # its own: this test stops it
    report = discover_runtime([cd.endpoint])
    assert report.found, report.message
    back: list[RuntimeReport] = []
    watch = RuntimeWatch(report, every=0.2)
    watch.start(on_back=back.append)
    try:
        cd.stop()
        down = _wait(lambda: not watch.state().reachable and watch.state())
        assert down.report.endpoint == cd.endpoint and "Version: UNAVAILABLE" in down.error
        assert f"at {cd.endpoint} has not answered since" in down.message
        assert back == []
        cd.start()
        up = _wait(lambda: back and watch.state())
        assert up.reachable and up.report.name == "containerd" and back == [up.report]
    finally:
        watch.close()


def _wait(fn: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        assert time.monotonic() < deadline, "not within 15 s"
        time.sleep(0.1)
    return got
