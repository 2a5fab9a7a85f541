"""The local single-node cluster: pods created with kubectl run under a real kubelet
on the real containerd, in the cgroups a real node gives them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from harness.localcluster import LocalCluster
from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.client import CRIClient

UNIFIED = Path("/sys/fs/cgroup/unified")


def _apply(cluster: LocalCluster, manifest: dict[str, object]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _container_id(pod: dict[str, object]) -> str:
    status = pod["status"]
    assert isinstance(status, dict)
    (container,) = status["containerStatuses"]
    runtime, _, cid = container["containerID"].partition("://")
    assert runtime == "containerd"
    return cid


def _wait_gone(path: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not path.exists()


def test_node_is_registered_ready_and_untainted(local_cluster: LocalCluster) -> None:
    node = local_cluster.get_json(f"/api/v1/nodes/{local_cluster.node_name}")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert not any(
        t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", [])
    )
    info = node["status"]["nodeInfo"]
    assert local_cluster.kubelet is not None
    built = subprocess.run(
        [str(local_cluster.kubelet.binary), "--version"], capture_output=True, text=True, check=True
    )
    assert built.stdout.split()[-1] == info["kubeletVersion"]  # "Kubernetes v1.32.13"
    assert info["containerRuntimeVersion"].startswith("containerd://")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == local_cluster.kubelet.node_ip


def test_kubectl_pod_runs_in_its_kubepods_cgroup(local_cluster: LocalCluster) -> None:
    _apply(local_cluster, local_cluster.pod_manifest("hello", ["sh", "-c", "echo hi; sleep 3600"]))
    pod = local_cluster.wait_pod("hello", timeout=60)
    uid, cid = pod["metadata"]["uid"], _container_id(pod)
    assert pod["status"]["qosClass"] == "BestEffort"

    # The container's cgroup, where the agent will look for it: cgroup2 and every v1
    # hierarchy, /kubepods/besteffort/pod<uid>/<containerID> as on a real node.
    path = f"{local_cluster.kubepods}/besteffort/pod{uid}/{cid}"
    cgroup = UNIFIED / path.lstrip("/")
    assert cgroup.is_dir(), sorted(p.name for p in cgroup.parent.parent.iterdir())
    pids = (cgroup / "cgroup.procs").read_text().split()
    assert pids, f"no process in {cgroup}"
    own = Path(f"/proc/{pids[0]}/cgroup").read_text().splitlines()
    assert f"0::{path}" in own
    assert any(line.endswith(f":memory:{path}") for line in own)

    # kubectl logs goes apiserver -> kubelet (client certificate) -> CRI log file.
    deadline = time.monotonic() + 20
    logs = ""
    while "hi" not in logs and time.monotonic() < deadline:
        logs = local_cluster.kubectl("logs", "hello", check=False).stdout
        time.sleep(0.2)
    assert logs == "hi\n"

    local_cluster.kubectl("delete", "pod", "hello", "--wait=true", "--timeout=60s")
    with CRIClient(local_cluster.runtime_endpoint, timeout=10.0) as cri:
        assert cid not in {c.id for c in cri.list_containers()}
        # The sandbox is stopped at once and removed by kubelet's next garbage collection.
        sandboxes = [s for s in cri.list_pod_sandboxes() if s.metadata.uid == uid]
        assert all(s.state == api_pb2.SANDBOX_NOTREADY for s in sandboxes)
    assert _wait_gone(cgroup.parent), f"kubelet left {cgroup.parent}"


def test_burstable_pod_lands_under_burstable(local_cluster: LocalCluster) -> None:
    manifest = local_cluster.pod_manifest("burst", ["sleep", "3600"])
    manifest["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "10m"}}  # type: ignore[index]
    _apply(local_cluster, manifest)
    pod = local_cluster.wait_pod("burst", timeout=60)
    assert pod["status"]["qosClass"] == "Burstable"
    kubepods = UNIFIED / local_cluster.kubepods.lstrip("/")
    cgroup = kubepods / "burstable" / f"pod{pod['metadata']['uid']}"
    assert (cgroup / _container_id(pod)).is_dir()
    local_cluster.kubectl("delete", "pod", "burst", "--wait=true", "--timeout=60s")
    assert _wait_gone(cgroup), f"kubelet left {cgroup}"


def test_new_namespace_gets_its_service_account_and_token(local_cluster: LocalCluster) -> None:
    # No controller-manager: the cluster's namespace bootstrap stands in for it.
    local_cluster.kubectl("create", "namespace", "shop")
    command = ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"]
    manifest = local_cluster.pod_manifest("token", command, namespace="shop")
    deadline = time.monotonic() + 10
    while True:  # the ServiceAccount appears within a poll interval of the namespace
        done = local_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert done.returncode == 0, done.stderr
    local_cluster.wait_pod("token", "shop", phase="Succeeded", timeout=60)
    assert local_cluster.kubectl("logs", "-n", "shop", "token").stdout == "shop"


def test_localhost_seccomp_profile_is_enforced(local_cluster: LocalCluster) -> None:
    # Where a generated profile goes for `seccompProfile: {type: Localhost}` to find it.
    local_cluster.seccomp_dir.mkdir(parents=True, exist_ok=True)
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    (local_cluster.seccomp_dir / "deny-mkdir.json").write_text(json.dumps(profile))
    confined = {"seccompProfile": {"type": "Localhost", "localhostProfile": "deny-mkdir.json"}}
    command = ["sh", "-c", "mkdir /tmp/x 2>/dev/null && echo made || echo denied"]
    for name, extra in (("free", {}), ("confined", {"securityContext": confined})):
        _apply(local_cluster, local_cluster.pod_manifest(name, command, extra_spec=extra))
    for name, expected in (("free", "made\n"), ("confined", "denied\n")):
        local_cluster.wait_pod(name, phase="Succeeded", timeout=60)
        assert local_cluster.kubectl("logs", name).stdout == expected
