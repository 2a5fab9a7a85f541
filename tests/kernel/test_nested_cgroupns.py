"""A node that lives in a container (kind with --cgroupns=private, minikube's
docker driver, k3d), emulated on this kernel: `podtrace-agent standalone` runs
in a private cgroup namespace rooted at a node-like cgroup, with its own
cgroup2 mount (--cgroupfs), kubepods below it. Everything the agent reads under
its mount is relative to the node; the kernel's levels, paths and IDs are not.

Per backend (bcc, ftrace) and layout (cgroupfs names; kind's systemd names with
cgroup root /kubelet, whose container paths pass 256 bytes): a container made
before the agent starts (the scan) and one after (cgroup_mkdir), each making
exactly GETPPIDS getppid calls and one exec; and what must not be counted: a
process in the node outside kubepods, one outside the node, and a container
of a second node with the very same relative layout.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kernel_support import cgroup2_mount, kill_and_remove
from test_standalone import EVENT_TIMEOUT_S, GETPPIDS, SETTLE_S, START_TIMEOUT_S, Agent, run_in

from harness.prereq import missing, need_binary, need_root

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Layout:
    kubepods: str
    container: str  # format: {uid}, {suid} (systemd-escaped), {cid}


CGROUPFS = Layout("kubepods", "kubepods/besteffort/pod{uid}/{cid}")
KIND = Layout(
    "kubelet.slice/kubelet-kubepods.slice",
    "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    "kubelet-kubepods-besteffort-pod{suid}.slice/cri-containerd-{cid}.scope",
)


def container_path(layout: Layout) -> tuple[str, str, str]:
    """(pod uid, container id, path below the node) of a new container."""
    uid, cid = str(uuid.uuid4()), uuid.uuid4().hex * 2
    return uid, cid, layout.container.format(uid=uid, suid=uid.replace("-", "_"), cid=cid)


@dataclass
class Cgroups:
    """Cgroups made by one test, removed deepest first (their processes killed)."""

    made: list[Path] = field(default_factory=list)

    def mkdirs(self, path: Path) -> Path:
        for parent in reversed([path, *path.parents]):
            if not parent.exists():
                parent.mkdir()
                self.made.append(parent)
        return path

    def remove(self) -> None:
        for path in sorted(self.made, key=lambda p: len(p.parts), reverse=True):
            kill_and_remove(path)  # retries EBUSY while a child goes offline
        assert not [p for p in self.made if p.exists()]


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    made = Cgroups()
    yield made
    made.remove()


@pytest.fixture(scope="module")
def cgroup2() -> Path:
    need_root("the kernel tier")
    need_binary("unshare", "apt-get install util-linux")
    mount = cgroup2_mount()
    if mount is None:
        missing("no cgroup2 mount")
    return mount  # type: ignore[return-value]


def node_name() -> str:
    """Like a kind node's cgroup on a Docker host (and as long)."""
    return f"podtrace-node-{uuid.uuid4().hex[:8]}.slice/docker-{uuid.uuid4().hex * 2}.scope"


def nested_agent(node: Path, mount: Path, backend: str) -> list[str]:
    """The agent in `node`, in a new cgroup namespace (rooted there) and mount
    namespace, with cgroup2 mounted at `mount` inside; the process is the agent
    itself (each step execs the next), so signals reach it."""
    agent = Path(sys.executable).with_name("podtrace-agent")
    if not agent.exists():
        missing("the podtrace-agent console script is not installed: run make venv")
    inner = (f"mount -t cgroup2 none {mount} && exec {agent} standalone --cgroupfs {mount} "
             f"--backend {backend} --duration 300s --no-pin")
    outer = (f"echo $$ > {node}/cgroup.procs && "
             f"exec unshare --cgroup --mount --propagation private sh -c '{inner}'")
    return ["sh", "-c", outer]


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
@pytest.mark.parametrize("layout", [CGROUPFS, KIND], ids=["cgroupfs", "kind-systemd"])
def test_agent_in_a_nested_cgroup_namespace(
    backend: str, layout: Layout, cgroup2: Path, cgroups: Cgroups, helper: Path, tmp_path: Path
) -> None:
    node_rel = node_name()
    node = cgroups.mkdirs(cgroup2 / node_rel)
    kubepods = cgroups.mkdirs(node / layout.kubepods)
    # a second node with the very same layout: its cgroups are not ours
    other = cgroups.mkdirs(cgroup2 / node_name())
    uid_a, cid_a, rel_a = container_path(layout)
    uid_b, cid_b, rel_b = container_path(layout)
    _, cid_x, rel_x = container_path(layout)
    before = cgroups.mkdirs(node / rel_a)
    system = cgroups.mkdirs(node / "system.slice")  # the node's own services
    mount = tmp_path / "cgroup"
    mount.mkdir()
    outside = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"  # a name nobody else runs
    shutil.copy("/bin/true", outside)

    agent = Agent(nested_agent(node, mount, backend))
    try:
        env = agent.wait_for(lambda line: True, START_TIMEOUT_S)
        assert env["type"] == "environment", agent.stderr()
        cg = env["cgroup"]
        assert cg["root"] == str(mount) and cg["host_namespace"] is False
        assert cg["namespace_root"] == f"/{node_rel}"
        assert cg["kubepods_path"] == layout.kubepods
        assert cg["kubepods_id"] == kubepods.stat().st_ino
        assert cg["kubepods_level"] == len(Path(node_rel, layout.kubepods).parts)  # absolute
        assert env["problems"] == [], env["problems"]
        assert env["backend"]["name"] == backend

        scanned = agent.wait_for(lambda ln: ln.get("container_id") == cid_a, EVENT_TIMEOUT_S)
        after = cgroups.mkdirs(node / rel_b)
        created = agent.wait_for(lambda ln: ln.get("container_id") == cid_b, EVENT_TIMEOUT_S)
        elsewhere = cgroups.mkdirs(other / rel_x)

        settle = SETTLE_S[backend]
        for directory in (system, elsewhere, None):  # None: outside every node
            procs = directory / "cgroup.procs" if directory else None
            run_in(helper, procs, str(outside), tmp_path, settle)
        for directory in (before, after):
            run_in(helper, directory / "cgroup.procs", "/bin/true", tmp_path, settle)
        for cid in (cid_a, cid_b):
            agent.wait_for(lambda ln, c=cid: ln["type"] == "exec" and ln["container_id"] == c,
                           EVENT_TIMEOUT_S)
        agent.process.send_signal(signal.SIGINT)
        lines = agent.finish(timeout=120)
    finally:
        agent.close()
        subprocess.run(["umount", str(mount)], capture_output=True)  # only if it leaked out

    assert (scanned["type"], scanned["found"], scanned["pod_uid"]) == ("traced", "scan", uid_a)
    assert (created["type"], created["found"], created["pod_uid"]) == ("traced", "mkdir", uid_b)
    assert scanned["path"] == rel_a and created["path"] == rel_b  # relative to the mount
    assert scanned["cgroup_id"] == before.stat().st_ino
    assert created["cgroup_id"] == after.stat().st_ino

    execs = [ln for ln in lines if ln["type"] == "exec"]
    assert sorted((ln["container_id"], ln["filename"]) for ln in execs) == sorted(
        [(cid_a, "/bin/true"), (cid_b, "/bin/true")]
    ), execs
    summaries = {ln["container_id"]: ln for ln in lines if ln["type"] == "summary"}
    assert set(summaries) == {cid_a, cid_b}
    for cid in (cid_a, cid_b):
        assert summaries[cid]["syscalls"].get("getppid") == GETPPIDS, summaries[cid]
        assert summaries[cid]["execs"] == [{"filename": "/bin/true", "count": 1}]

    # nothing from outside kubepods, outside the node, or the other node
    assert {ln["container_id"] for ln in lines if ln["type"] == "traced"} == {cid_a, cid_b}
    assert cid_x not in json.dumps(lines)
    assert str(outside) not in json.dumps(lines)
    stats = lines[-1]
    assert stats["type"] == "stats" and stats["backend"] == backend
    assert stats["events_dropped"] == 0 and stats["problems"] == [], stats
    assert stats["unattributed_events"] == 0, stats


# --- cluster mode: `podtrace-agent run` in the nested namespace, a real apiserver ------------


@dataclass
class ControlPlane:
    """A real apiserver with the CRDs, and the operator as a host process."""

    api: Any
    kubeconfig: Path
    operator: subprocess.Popen[bytes]
    operator_log: Path

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return str(self.api.kubectl(*args, input=input).stdout)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found", *(["-n", ns] if ns else [])]
        out = self.kubectl(*args)
        return dict(json.loads(out)) if out.strip() else {}


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    from harness.apiserver import LocalAPIServer
    from harness.k8s_binaries import PrerequisiteMissing, ensure_binaries
    from harness.podtrace_procs import install_crds

    need_root("the kernel tier")
    try:
        binaries = ensure_binaries(kubelet=False)
    except PrerequisiteMissing as exc:
        missing(str(exc))
    operator = Path(sys.executable).with_name("podtrace-operator")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with LocalAPIServer(binaries) as api:
        install_crds(binaries.kubectl, api.kubeconfig)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(operator), f"--kubeconfig={api.kubeconfig}", "--standalone",
                 "--pending-timeout=10m"], stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            yield ControlPlane(api, api.kubeconfig, proc, log)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def nested_cluster_agent(node: Path, mount: Path, backend: str, node_name: str,
                         kubeconfig: Path) -> list[str]:  # fmt: skip
    """`podtrace-agent run` for `node_name`, nested as in nested_agent()."""
    agent = Path(sys.executable).with_name("podtrace-agent")
    inner = (f"mount -t cgroup2 none {mount} && exec {agent} run --node-name {node_name} "
             f"--kubeconfig {kubeconfig} --cgroupfs {mount} --backend {backend} "
             "--status-interval 1s --metrics-port 0 --no-pin")
    outer = (f"echo $$ > {node}/cgroup.procs && "
             f"exec unshare --cgroup --mount --propagation private sh -c '{inner}'")
    return ["sh", "-c", outer]


def running_pod(cp: ControlPlane, name: str, ns: str, node_name: str, cid: str) -> str:
    """A Pod on `node_name` with a running container `main` of ID `cid`, as a kubelet
    would report it; returns its UID (the name of its cgroup)."""
    cp.apply({"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
              "spec": {"nodeName": node_name,
                       "containers": [{"name": "main", "image": "busybox"}]}})  # fmt: skip
    status = {"phase": "Running", "containerStatuses": [{
        "name": "main", "containerID": f"containerd://{cid}", "image": "busybox",
        "imageID": "", "ready": True, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]}  # fmt: skip
    cp.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": status}))  # fmt: skip
    return str(cp.get("pod", name, ns)["metadata"]["uid"])


def wait_until(what: str, fn: Any, timeout: float, show: Any = None) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f}s; last seen: "
                        f"{json.dumps(show() if show else None, indent=1, default=str)}")
        time.sleep(0.5)


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
@pytest.mark.parametrize("layout", [CGROUPFS, KIND], ids=["cgroupfs", "kind-systemd"])
def test_cluster_agent_in_a_nested_cgroup_namespace(
    backend: str, layout: Layout, cgroup2: Path, cgroups: Cgroups, helper: Path,
    control_plane: ControlPlane, tmp_path: Path,
) -> None:  # fmt: skip
    cp = control_plane
    suffix = uuid.uuid4().hex[:6]
    node_k8s, ns = f"kind-node-{suffix}", f"shop-{suffix}"
    node_rel = node_name()
    node = cgroups.mkdirs(cgroup2 / node_rel)
    kubepods = cgroups.mkdirs(node / layout.kubepods)
    system = cgroups.mkdirs(node / "system.slice")
    other = cgroups.mkdirs(cgroup2 / node_name())  # another node, same layout
    cp.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_k8s}})
    cp.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    cp.apply({"apiVersion": "v1", "kind": "ServiceAccount",  # no controller-manager here
              "metadata": {"name": "default", "namespace": ns}})  # fmt: skip
    cp.apply({"apiVersion": "podtrace.io/v1alpha1", "kind": "ContainerTrace",
              "metadata": {"name": "rec", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "web"}}}})  # fmt: skip

    def container(name: str) -> tuple[str, Path]:
        _, cid, _ = container_path(layout)
        uid = running_pod(cp, name, ns, node_k8s, cid)
        rel = layout.container.format(uid=uid, suid=uid.replace("-", "_"), cid=cid)
        return cid, node / rel

    cid_a, dir_a = container("web-a")
    cgroups.mkdirs(dir_a)  # before the agent starts: found by its scan
    mount = tmp_path / "cgroup"
    mount.mkdir()
    agent = Agent(nested_cluster_agent(node, mount, backend, node_k8s, cp.kubeconfig))
    try:
        def nt_ready() -> dict[str, Any] | None:
            nt = cp.get("nodetracer", node_k8s)
            conds = (nt.get("status") or {}).get("conditions") or []
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return nt if ok else None

        nt = wait_until("the nested agent's NodeTracer Ready", nt_ready, START_TIMEOUT_S,
                        show=lambda: cp.get("nodetracer", node_k8s).get("status"))
        cgroup = nt["status"]["cgroup"]
        assert cgroup["hostNamespace"] is False and cgroup["namespaceRoot"] == f"/{node_rel}"
        assert cgroup["kubepodsId"] == kubepods.stat().st_ino, cgroup
        assert cgroup["kubepodsLevel"] == len(Path(node_rel, layout.kubepods).parts), cgroup
        assert not [c for c in nt["status"]["conditions"]
                    if c["type"] == "CgroupsDiscovered" and c["status"] != "True"], nt["status"]
        if backend == "bcc" and layout is KIND:  # the closing note's example
            print(f"\n--- kubectl get nt {node_k8s} -o yaml (nested, kind names) ---\n"
                  + cp.kubectl("get", "nt", node_k8s, "-o", "yaml"))  # fmt: skip

        cid_b, dir_b = container("web-b")
        cgroups.mkdirs(dir_b)  # after: cgroup_mkdir
        _, _, rel_x = container_path(layout)
        elsewhere = cgroups.mkdirs(other / rel_x)

        def both_tracing() -> list[dict[str, Any]] | None:
            targets = (cp.get("nodetracer", node_k8s).get("status") or {}).get("targets") or []
            states = {t.get("containerId"): t.get("state") for t in targets}
            ok = states.get(cid_a) == "Tracing" and states.get(cid_b) == "Tracing"
            return targets if ok else None

        wait_until("both containers Tracing in the NodeTracer", both_tracing, 60,
                   show=lambda: cp.get("nodetracer", node_k8s).get("status"))
        settle = SETTLE_S[backend]
        outside = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"
        shutil.copy("/bin/true", outside)
        for directory in (system, elsewhere, None):
            procs = directory / "cgroup.procs" if directory else None
            run_in(helper, procs, str(outside), tmp_path, settle)
        for directory in (dir_a, dir_b):
            run_in(helper, directory / "cgroup.procs", "/bin/true", tmp_path, settle)

        def counted() -> dict[str, Any] | None:
            status = cp.get("containertrace", "rec", ns).get("status") or {}
            execs = {e["filename"]: e["count"] for e in status.get("execs") or []}
            top = {s["name"]: s["count"] for s in (status.get("syscalls") or {}).get("top") or []}
            done = execs.get("/bin/true") == 2 and top.get("getppid") == 2 * GETPPIDS
            return status if done else None

        status = wait_until("the ContainerTrace's exact counts", counted, 90,
                            show=lambda: {
                                "ct": cp.get("containertrace", "rec", ns).get("status"),
                                "nt": cp.get("nodetracer", node_k8s).get("status"),
                                "operator": cp.operator_log.read_text()[-3000:],
                            })  # fmt: skip
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.finish(timeout=120)
        agent.close()
        subprocess.run(["umount", str(mount)], capture_output=True)
        cp.kubectl("delete", "namespace", ns, "--wait=false")
        cp.kubectl("delete", "node", node_k8s, "--wait=false")

    # Exactly the two containers, nothing from the node's own services, outside the
    # node, or the other node.
    assert sorted(t["containerId"] for t in status["targets"]) == sorted([cid_a, cid_b]), status
    assert str(outside) not in json.dumps(status), status
    assert {e["filename"] for e in status["execs"]} <= {"/bin/true"}, status["execs"]
