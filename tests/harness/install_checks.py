"""The checks of an installed podtrace, shared by the install tier (the local cluster)
and the kind e2e: the operator Deployment (2 replicas, one active) and the agent
DaemonSet running with the manifests' own ServiceAccounts and RBAC through in-cluster
config; the whole loop through those pods (exact exec counts of a workload the
scheduler placed, one Warning Event for its shells, the seccomp ConfigMap, NodeTracer
Ready with bcc); `kubectl delete -k` leaving no BPF program, ftrace instance, pinned
map or pod cgroup of ours behind.

They read what a user reads (kubectl) and, for what only the node shows (the UID a
container runs as, loaded BPF programs, tracefs instances, cgroups), this host's
/proc and /sys: the tiers run their nodes on this kernel (kind's are containers).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "podtrace-system"
POLICY_FILE = REPO / "manifests" / "examples" / "tracingpolicy-shells.yaml"
API = "podtrace.io/v1alpha1"
TRACEFS_INSTANCES = Path("/sys/kernel/tracing/instances")
BPF_PINS = Path("/sys/fs/bpf/podtrace")
CGROUP_MOUNTS = Path("/sys/fs/cgroup")

NS = "shop"  # labelled env=prod: selected by the example policy
POLICY, TRACE = "web-shells", "rec"
WEB = {"app": "web"}
# Five rounds of cat + ls, three shells each running true, then sleep until deleted.
# Absolute paths: busybox sh runs bare applet names in-process, without an execve.
WORKLOAD = (
    "i=0; while [ $i -lt 5 ]; do /bin/cat /etc/hostname >/dev/null; /bin/ls / >/dev/null; "
    "i=$((i+1)); done; j=0; while [ $j -lt 3 ]; do /bin/sh -c /bin/true; j=$((j+1)); done; "
    "echo worked; exec /bin/sleep 3600"
)
EXECS = {"/bin/busybox": 1, "/bin/cat": 5, "/bin/ls": 5, "/bin/sh": 3, "/bin/true": 3,
         "/bin/sleep": 1}  # fmt: skip
SHELLS = 3


def bpf_program_ids() -> set[int]:
    """IDs of every BPF program loaded in the kernel now (bpftool)."""
    done = subprocess.run(
        ["bpftool", "--json", "prog", "show"], capture_output=True, text=True, check=True
    )
    return {int(p["id"]) for p in json.loads(done.stdout or "[]")}


def tracefs_instances() -> set[str]:
    """podtrace's ftrace instances in tracefs now (any process's)."""
    return {p.name for p in TRACEFS_INSTANCES.glob("podtrace*")}


@dataclass
class Installation:
    """An installed podtrace: how to reach its cluster, and what it was installed from."""

    kubectl_argv: Sequence[str]  # kubectl and its --kubeconfig
    node_name: str
    workload_image: str  # a busybox image the node has (imagePullPolicy: Never)
    kustomization: Path  # what was applied with -k, and is deleted with -k
    seccomp_dirs: Sequence[Path] = ()  # each node's kubelet seccomp directory
    programs_before: set[int] = field(default_factory=bpf_program_ids)
    # Other processes on this kernel (another test tier, a crashed run) may hold their
    # own: only what appeared after the install counts as the installation's.
    instances_before: set[str] = field(default_factory=tracefs_instances)
    timings: dict[str, float] = field(default_factory=dict)
    uninstalled: bool = False

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
        done = subprocess.run([*self.kubectl_argv, *args], input=input, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        return self.run(*args, check=check, timeout=timeout).stdout

    def install(self) -> None:
        began = time.monotonic()
        self.run("apply", "-k", str(self.kustomization))
        self.timings["kubectl apply -k"] = time.monotonic() - began

    def uninstall(self, check: bool = True) -> None:
        self.run("delete", "-k", str(self.kustomization), "--ignore-not-found", "--wait=true",
                 check=check, timeout=240)  # fmt: skip
        self.uninstalled = True

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def maybe(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        done = self.run("get", kind, name, *ns, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def pods(self, selector: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-n", namespace, "-l", selector)["items"])

    def logs(self) -> str:
        """The installed pods' logs (tails), for failure messages."""
        out = []
        for pod in self.pods("app.kubernetes.io/part-of=podtrace"):
            name = pod["metadata"]["name"]
            text = self.kubectl("logs", "-n", NAMESPACE, name, "--tail=25", check=False)
            out.append(f"--- {name} ({pod['status'].get('phase')}) ---\n{text}")
        return "\n" + "\n".join(out)

    def wait_for(
        self,
        what: str,
        fn: Callable[[], T | None],
        timeout: float = 180.0,
        show: Callable[[], Any] | None = None,
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            got = fn()
            if got:
                return got
            if time.monotonic() > deadline:
                shown = show() if show is not None else None
                pytest.fail(
                    f"{what}: not after {timeout:.0f}s; last seen: "
                    f"{json.dumps(shown, indent=1, default=str)}{self.logs()}"
                )
            time.sleep(0.5)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


# runc re-executing itself inside the container's cgroup: /proc/self/exe, or its memfd
# clone by execveat(fd, "", AT_EMPTY_PATH), which the kernel names /dev/fd/<fd>.
RUNTIME_REEXECS = ("/proc/self/", "/dev/fd/")


def workload_execs(records: list[dict[str, Any]]) -> dict[str, int]:
    """Exec counts without the runtime's own re-execs (RUNTIME_REEXECS)."""
    return {r["filename"]: r["count"] for r in records
            if not r["filename"].startswith(RUNTIME_REEXECS)}  # fmt: skip


def host_uid_of(container_id: str) -> int:
    """The real UID of a container's processes, read on the host (/proc/*/cgroup)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id not in (proc / "cgroup").read_text():
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        return int(uid_line.split()[1])
    raise AssertionError(f"no process of container {container_id} on this host")


def healthz(inst: Installation, pod: dict[str, Any]) -> dict[str, Any]:
    """The operator replica's liveness report, through the apiserver's pod proxy (pod IPs
    are not reachable from every host, e.g. kind's)."""
    name = pod["metadata"]["name"]
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}:8080/proxy/healthz"
    done = inst.run("get", "--raw", path, check=False, timeout=10)
    try:
        return dict(json.loads(done.stdout or "{}").get("podtrace") or {})
    except ValueError:
        return {}


def container_id(pod: dict[str, Any]) -> str:
    (status,) = pod["status"]["containerStatuses"]
    return str(status["containerID"].partition("://")[2])


# --- the checks, in the order they run -------------------------------------------------------


def check_running_as_installed(installed: Installation) -> None:
    """Deployment 2/2 with one active replica (non-root), DaemonSet 1/1 (root, hostPID)."""
    inst = installed

    def deployment_available() -> dict[str, Any] | None:
        d = inst.maybe("deployment", "podtrace-operator", NAMESPACE)
        return d if d and d.get("status", {}).get("availableReplicas") == 2 else None

    def daemonset_ready() -> dict[str, Any] | None:
        d = inst.maybe("daemonset", "podtrace-agent", NAMESPACE)
        ready = d and d.get("status", {}).get("numberReady") == 1
        return d if ready and d["status"].get("desiredNumberScheduled") == 1 else None

    inst.wait_for(
        "the operator Deployment 2/2 available",
        deployment_available,
        show=lambda: inst.maybe("deployment", "podtrace-operator", NAMESPACE),
    )
    inst.wait_for(
        "the agent DaemonSet 1/1 ready",
        daemonset_ready,
        show=lambda: inst.maybe("daemonset", "podtrace-agent", NAMESPACE),
    )

    operators = inst.pods("app.kubernetes.io/name=podtrace-operator")
    (agent,) = inst.pods("app.kubernetes.io/name=podtrace-agent")
    ctx = inst.logs()
    assert len(operators) == 2, ctx
    for pod in operators:
        assert pod["spec"]["serviceAccountName"] == "podtrace-operator", ctx
        assert pod["spec"]["nodeName"] == inst.node_name, ctx  # placed by the scheduler
        assert not pod["spec"].get("hostNetwork"), ctx
        assert host_uid_of(container_id(pod)) == 65532, ctx  # non-root, seen by the kernel
    assert agent["spec"]["serviceAccountName"] == "podtrace-agent", ctx
    assert agent["spec"]["hostPID"] is True, ctx
    assert host_uid_of(container_id(agent)) == 0, ctx
    # In-cluster config with the ServiceAccount token the kubelet mounted.
    for pod in [*operators, agent]:
        mounts = pod["spec"]["containers"][0].get("volumeMounts") or []
        assert any(m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
                   for m in mounts), ctx  # fmt: skip

    # kopf peering: one replica works, the other stands by.
    def one_active() -> list[dict[str, Any]] | None:
        probes = [healthz(inst, p) for p in operators]
        actives = [p.get("active") for p in probes]
        # ...and the one that works has listed everything it watches.
        synced = all(p.get("synced") for p in probes if p.get("active"))
        return probes if sorted(actives, key=str) == [False, True] and synced else None

    inst.wait_for(
        "exactly one active operator replica, synced",
        one_active,
        show=lambda: [healthz(inst, p) for p in operators],
    )


def check_nodetracer_ready_with_bcc(installed: Installation) -> None:
    inst = installed
    node = inst.node_name

    def ready() -> dict[str, Any] | None:
        nt = inst.maybe("nodetracer", node)
        status = (nt or {}).get("status") or {}
        return nt if condition(status, "Ready").get("status") == "True" else None

    nt = inst.wait_for(
        f"NodeTracer {node} Ready",
        ready,
        show=lambda: (inst.maybe("nodetracer", node) or {}).get("status"),
    )
    status = nt["status"]
    ctx = f"{json.dumps(status, indent=1)}{inst.logs()}"
    assert status["backend"]["name"] == "bcc", ctx
    assert status["runtime"]["name"] == "containerd", ctx
    assert status["cgroup"]["kubepodsId"] > 0, ctx
    # The agent pod's programs are in the kernel now: the uninstall check below can fail.
    assert bpf_program_ids() - inst.programs_before, ctx
    # Its liveness endpoint (the DaemonSet's probe) answers, and it never restarted.
    (agent,) = [p for p in inst.pods("app.kubernetes.io/name=podtrace-agent")
                if p["spec"]["nodeName"] == node]  # fmt: skip
    name = agent["metadata"]["name"]
    proxy = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}:9465/proxy/healthz"
    health = inst.run("get", "--raw", proxy, check=False, timeout=10)
    assert health.returncode == 0 and health.stdout.startswith("ok"), (health.stderr, ctx)
    assert agent["status"]["containerStatuses"][0]["restartCount"] == 0, ctx


def check_workload_traced_exactly(installed: Installation) -> None:
    inst = installed
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NS, "labels": {"env": "prod"}}}  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(namespace))
    inst.wait_for(f"namespace {NS}'s ServiceAccount",
                  lambda: inst.maybe("serviceaccount", "default", NS))  # fmt: skip
    inst.run("apply", "-f", str(POLICY_FILE))
    trace = {
        "apiVersion": API, "kind": "ContainerTrace",
        "metadata": {"name": TRACE, "namespace": NS},
        "spec": {"selector": {"matchLabels": WEB}, "seccompProfile": {"install": True}},
    }  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(trace))
    for kind, name, ns in (("tracingpolicy", POLICY, None), ("containertrace", TRACE, NS)):
        inst.wait_for(f"{kind} {name} Valid",
                      lambda k=kind, n=name, s=ns: condition(
                          ((inst.maybe(k, n, s) or {}).get("status") or {}), "Valid"
                      ).get("status") == "True")  # fmt: skip

    # Placed by the scheduler, on the pod network: an ordinary pod.
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": NS, "labels": WEB},
        "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": inst.workload_image, "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c", WORKLOAD],
            }],
        },
    }  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(pod))

    def traced() -> dict[str, Any] | None:
        status = (inst.maybe("containertrace", TRACE, NS) or {}).get("status") or {}
        done = (
            status.get("phase") == "Tracing" and workload_execs(status.get("execs") or []) == EXECS
        )
        return status if done else None

    status = inst.wait_for("web-1's exact execs in the ContainerTrace", traced,
                           show=lambda: (inst.maybe("containertrace", TRACE, NS) or {})
                           .get("status"))  # fmt: skip
    ctx = f"{json.dumps(status, indent=1)}{inst.logs()}"
    (target,) = status["targets"]
    web = inst.json("get", "pod", "web-1", "-n", NS)
    assert (target["pod"], target["container"]) == ("web-1", "main"), ctx
    assert target["state"] == "Tracing", ctx
    assert target["containerId"] == container_id(web), ctx
    assert target["node"] == inst.node_name, ctx
    assert status["syscalls"]["total"] > 0, ctx
    assert inst.kubectl("logs", "-n", NS, "web-1") == "worked\n", ctx

    # The agent pod installed the profile in the node's kubelet seccomp directory.
    check_profile_installed(inst, NS, TRACE, [inst.node_name], inst.seccomp_dirs)

    def policy_counted() -> dict[str, Any] | None:
        st = (inst.maybe("tracingpolicy", POLICY) or {}).get("status") or {}
        return st if st.get("eventsTotal") == SHELLS else None

    pstatus = inst.wait_for(
        "the policy's eventsTotal",
        policy_counted,
        show=lambda: (inst.maybe("tracingpolicy", POLICY) or {}).get("status"),
    )
    assert pstatus["nodes"] == "1/1", pstatus

    def shell_events() -> list[dict[str, Any]] | None:
        events = inst.json("get", "events.v1.events.k8s.io", "-n", NS)["items"]
        found = [e for e in events if e.get("reason") == "ShellInContainer"
                 and (e.get("regarding") or {}).get("name") == "web-1"]  # fmt: skip
        return found or None

    events = inst.wait_for("a ShellInContainer Event on web-1", shell_events)
    assert len(events) == 1 and events[0]["type"] == "Warning", (events, inst.logs())
    assert events[0]["regarding"]["uid"] == web["metadata"]["uid"], events

    def profile() -> dict[str, Any] | None:
        cm = inst.maybe("configmap", f"{TRACE}-seccomp", NS)
        return cm if cm and cm.get("data") else None

    cm = inst.wait_for("the seccomp ConfigMap", profile)
    (text,) = cm["data"].values()
    seccomp = json.loads(text)
    names = {n for group in seccomp["syscalls"] for n in group["names"]}
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and "execve" in names, seccomp


def check_profile_installed(inst: Installation, namespace: str, trace: str, nodes: list[str],
                            seccomp_dirs: Sequence[Path]) -> dict[str, Any]:  # fmt: skip
    """Wait until the trace says every node holds its container main's current profile;
    check that each node's file is the ConfigMap's profile. Returns the trace's status."""
    def installed() -> dict[str, Any] | None:
        status = (inst.maybe("containertrace", trace, namespace) or {}).get("status") or {}
        done = condition(status, "ProfileInstalled").get("status") == "True"
        where = (status.get("seccompProfile") or {}).get("installed") or {}
        return status if done and where.get("nodes") == nodes else None

    status = inst.wait_for(f"{trace}'s profile installed on {nodes}", installed,
                           show=lambda: (inst.maybe("containertrace", trace, namespace) or {})
                           .get("status", {}).get("seccompProfile"))  # fmt: skip
    ctx = f"{json.dumps(status, indent=1)}{inst.logs()}"
    profile = status["seccompProfile"]
    assert profile["installed"]["nodes"] == nodes, ctx
    assert profile["installed"]["installedNodes"] == profile["installed"]["totalNodes"], ctx
    (main,) = (c for c in profile["containers"] if c["container"] == "main")
    assert main["localhostProfile"] == f"podtrace/{namespace}/{trace}-main.json", ctx
    assert seccomp_dirs, "the installation names no node's seccomp directory"
    files = [Path(d) / main["localhostProfile"] for d in seccomp_dirs]

    def same_as_recorded() -> bool:  # the profile may grow meanwhile: then both follow
        data = inst.json("get", "configmap", profile["configMap"], "-n", namespace)["data"]
        return all(f.exists() and f.read_text() == data["main.json"] for f in files)

    inst.wait_for("every node's file the ConfigMap's main.json", same_as_recorded,
                  show=lambda: [f.read_text()[:200] for f in files if f.exists()])  # fmt: skip
    return status


def check_uninstall_leaves_nothing(installed: Installation) -> None:
    inst = installed
    pod_uids = [p["metadata"]["uid"] for p in inst.pods("app.kubernetes.io/part-of=podtrace")]
    assert pod_uids, inst.logs()
    inst.run("delete", "pod", "web-1", "-n", NS, "--wait=true", timeout=120)
    inst.uninstall()

    def namespace_gone() -> bool:
        return inst.maybe("namespace", NAMESPACE) is None

    inst.wait_for(f"namespace {NAMESPACE} deleted", namespace_gone, timeout=180,
                  show=lambda: inst.maybe("namespace", NAMESPACE))  # fmt: skip
    for crd in ("tracingpolicies", "containertraces", "nodetracers"):
        assert inst.maybe("crd", f"{crd}.podtrace.io") is None, crd

    def no_pod_cgroups() -> list[str] | None:
        # cgroupfs names pod<uid>; systemd (kind) kubepods-…-pod<uid with _>.slice.
        patterns = [
            p for uid in pod_uids for p in (f"pod{uid}", f"*pod{uid.replace('-', '_')}.slice")
        ]
        left = [str(d) for pattern in patterns for d in CGROUP_MOUNTS.glob(f"**/{pattern}")]
        return None if left else ["gone"]

    inst.wait_for("the installed pods' cgroups removed by the kubelet", no_pod_cgroups,
                  timeout=60)  # fmt: skip
    new_programs = bpf_program_ids() - inst.programs_before
    assert not new_programs, f"BPF programs left loaded: {sorted(new_programs)}"
    instances = sorted(tracefs_instances() - inst.instances_before)
    assert not instances, f"ftrace instances left: {instances}"
    assert not BPF_PINS.exists(), f"{BPF_PINS} left: {list(BPF_PINS.iterdir())}"
    for directory in inst.seccomp_dirs:  # the agents removed the profiles they installed
        left = Path(directory) / "podtrace"
        assert not left.exists(), f"{left} left: {list(left.iterdir())}"
