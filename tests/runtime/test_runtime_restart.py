"""containerd goes away and comes back: enrichment says so and recovers, and the
containers keep running meanwhile."""

from __future__ import annotations

import os
import time

from harness.containerd import PodRunner, StartContainerd
from harness.oci_image import OCIImage
from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.client import CRIClient
from podtrace_agent.cri.enrich import Enricher
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
