"""The whole loop on the local single-node cluster, for real: pods created with kubectl
run under the real kubelet on containerd, `podtrace-operator --standalone` and
`podtrace-agent run` (bcc) run as host processes, and every check reads what a user
would read — NodeTracer, ContainerTrace and TracingPolicy status, Events on the Pod,
the seccomp ConfigMap, the agent's JSON lines.

The workloads are known exactly, so the counts are exact. Their commands use absolute
paths (/bin/cat, not cat): busybox sh runs applets named bare in-process or re-execs
/proc/self/exe, and only an absolute path is the workload's own execve. A runtime's
re-exec of /proc/self/exe (runc init, or sh's re-exec) may or may not appear in the
exec lists: the checks look at the workload's files only.

Workloads that must stay alive while their counts are read wait on a FIFO in a hostPath
directory (`read` is a shell builtin: waiting costs no exec), and the test releases
them by writing to it — no race against a sleep.

The tests share one cluster, operator and agent and run in file order: the node's
NodeTracer; a pod selected by the example shell policy and a ContainerTrace (exact execs,
syscalls, one Warning Event for three shells); a pod started later (traced from its first
exec); the generated seccomp profile (the workload's syscalls only, after runc's
prctl(PR_GET_PDEATHSIG) marker) replayed per container with allowPrivilegeEscalation true
and false (the workload runs, mkdir(2) is denied), a workload that calls sethostname and
unshare itself keeps them;
the counts of both pods kept after they exit; deleting policy and trace stops tracing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.install_checks import RUNTIME_REEXECS
from harness.localcluster import LocalCluster
from harness.podtrace_procs import Podtrace, install_crds
from harness.procs import tail
from podtrace_api.syscalls import name_of
from podtrace_api.syscallset import decode

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "manifests" / "examples" / "tracingpolicy-shells.yaml"
UNIFIED = Path("/sys/fs/cgroup/unified")
API = "podtrace.io/v1alpha1"

NS = "shop"  # labelled env=prod: selected by the example policy
REPLAY_NS = "replay"  # not selected by anything
POLICY = "web-shells"
TRACE = "rec"
POLICY_SRC = f"TracingPolicy/{POLICY}"
TRACE_SRC = f"ContainerTrace/{NS}/{TRACE}"
WEB = {"app": "web"}
GATE_MOUNT = "/gate"


def workload(gate: str | None) -> str:
    """Five rounds of cat + ls, three shells each running true, then (with a gate)
    wait until released. Output: `worked 5 3`, then `released go`."""
    fifo = f"{GATE_MOUNT}/{gate}"
    wait = f'if [ -p {fifo} ]; then read line < {fifo}; echo "released $line"; fi' if gate else ""
    return (
        "i=0; while [ $i -lt 5 ]; do /bin/cat /etc/hostname >/dev/null; /bin/ls / >/dev/null; "
        "i=$((i+1)); done; "
        "j=0; while [ $j -lt 3 ]; do /bin/sh -c /bin/true; j=$((j+1)); done; "
        'echo "worked $i $j"; ' + wait
    )


WORKLOAD_EXECS = {"/bin/busybox": 1, "/bin/cat": 5, "/bin/ls": 5, "/bin/sh": 3, "/bin/true": 3}
WORKLOAD_LOG = "worked 5 3\n"
SHELLS = 3  # /bin/sh execs: matches of the policy's shell-exec rule


def late_workload(gate: str) -> str:
    """The pod started once everything is tracing: its very first command counts."""
    return (
        "/bin/echo first; /bin/cat /etc/hostname >/dev/null; /bin/cat /etc/hostname >/dev/null; "
        f"/bin/ls / >/dev/null; read line < {GATE_MOUNT}/{gate}; echo \"released $line\""
    )


LATE_EXECS = {"/bin/busybox": 1, "/bin/echo": 1, "/bin/cat": 2, "/bin/ls": 1}


def entrypoint(script: str) -> list[str]:
    # /bin/busybox, not /bin/sh: the entrypoint must not match the shell rule.
    return ["/bin/busybox", "sh", "-c", script]


# --- the shared setup ------------------------------------------------------------------------


@dataclass
class Loop:
    cluster: LocalCluster
    podtrace: Podtrace
    gate_dir: Path
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → Pod when Running

    # -- diagnostics --

    def logs(self) -> str:
        pt = self.podtrace
        return (
            f"\n--- agent log (tail) ---\n{tail(pt.agent_log, 30)}"
            f"\n--- agent events (tail) ---\n{tail(pt.agent_events, 15)}"
            f"\n--- operator log (tail) ---\n{tail(pt.operator_log, 30)}"
        )

    def wait_for(
        self, what: str, fn: Callable[[], T | None], timeout: float = 90.0,
        show: Callable[[], Any] | None = None,
    ) -> T:
        """Poll `fn` until it returns something truthy; fail with `show()` and the logs."""
        deadline = time.monotonic() + timeout
        while True:
            self.podtrace.check_alive()
            got = fn()
            if got:
                return got
            if time.monotonic() > deadline:
                shown = show() if show is not None else None
                pytest.fail(f"{what}: not after {timeout:.0f}s; last seen: "
                            f"{json.dumps(shown, indent=1, default=str)}{self.logs()}")
            time.sleep(0.3)

    # -- API --

    def apply(self, obj: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        done = self.cluster.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def status(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return ((self.get(kind, name, namespace) or {}).get("status")) or {}

    def nodetracer(self) -> dict[str, Any]:
        return self.get("nodetracer", self.cluster.node_name) or {}

    def nt_target(self, pod: str) -> dict[str, Any] | None:
        uid = self.pods[pod]["metadata"]["uid"]
        targets = (self.nodetracer().get("status") or {}).get("targets") or []
        return next((t for t in targets if t["podUid"] == uid and t["container"] == "main"),
                    None)

    def events(self, namespace: str) -> list[dict[str, Any]]:
        got = self.cluster.kubectl("get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json")
        return list(json.loads(got.stdout)["items"])

    def logs_of(self, pod: str, namespace: str) -> str:
        return self.cluster.kubectl("logs", "-n", namespace, pod, check=False).stdout

    def wait_valid(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.wait_for(f"{kind} {name} Valid",
                      lambda: condition(self.status(kind, name, namespace), "Valid")
                      .get("status") == "True",
                      show=lambda: self.status(kind, name, namespace))

    def shell_events(self, pod: str = "web-1") -> list[dict[str, Any]]:
        """The policy's ShellInContainer Events regarding `pod`."""
        return [e for e in self.events(NS)
                if e.get("reason") == "ShellInContainer"
                and (e.get("regarding") or {}).get("kind") == "Pod"
                and e["regarding"].get("name") == pod]

    # -- pods --

    def run_pod(
        self, name: str, script: str, *, namespace: str = NS, labels: dict[str, str] | None = None,
        gated: bool = False, extra_spec: dict[str, Any] | None = None,
    ) -> None:
        manifest = self.cluster.pod_manifest(
            name, entrypoint(script), namespace=namespace,
            labels=labels if labels is not None else WEB, extra_spec=extra_spec,
        )
        if gated:
            os.mkfifo(self.gate_dir / name, 0o600)
            manifest["spec"]["volumes"] = [
                {"name": "gate", "hostPath": {"path": str(self.gate_dir), "type": "Directory"}}
            ]
            manifest["spec"]["containers"][0]["volumeMounts"] = [
                {"name": "gate", "mountPath": GATE_MOUNT}
            ]
        self.apply(manifest)

    def wait_pod(self, name: str, namespace: str = NS, phase: str = "Running") -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            pod = self.get("pod", name, namespace)
            return pod if pod and pod.get("status", {}).get("phase") == phase else None

        pod = self.wait_for(f"pod {namespace}/{name} {phase}", reached, timeout=120,
                            show=lambda: self.status("pod", name, namespace))
        if phase == "Running":
            self.pods[name] = pod
        return pod

    def release(self, name: str, timeout: float = 60.0) -> None:
        """Let a gated workload finish: write to its FIFO once it waits on it."""
        fifo = self.gate_dir / name
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:  # ENXIO: nobody reads it yet
                if err.errno != errno.ENXIO or time.monotonic() > deadline:
                    pytest.fail(f"cannot release {name}: {err}{self.logs()}")
                time.sleep(0.2)
                continue
            try:
                os.write(fd, b"go\n")
            finally:
                os.close(fd)
            return

    def exec_lines(self, pod: str) -> list[dict[str, Any]]:
        """The agent's JSON exec lines for one pod of NS, in order."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for raw in self.podtrace.agent_events.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if line.get("type") == "exec" and line.get("pod") == pod \
                            and line.get("namespace") == NS:
                        out.append(line)
        return out


@pytest.fixture(scope="module")
def loop(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    cluster = local_cluster
    assert cluster.apiserver is not None
    install_crds(cluster.apiserver.binaries.kubectl, cluster.kubeconfig)
    kubepods = cluster.kubepods if cluster.kubepods != "/kubepods" else None
    gate_dir = tmp_path_factory.mktemp("gate")
    with Podtrace(cluster.kubeconfig, node=cluster.node_name,
                  cri_endpoint=cluster.runtime_endpoint,
                  workdir=tmp_path_factory.mktemp("podtrace"), kubepods=kubepods,
                  seccomp_dir=cluster.seccomp_dir) as pt:
        yield Loop(cluster, pt, gate_dir)


# --- small helpers ---------------------------------------------------------------------------


def exec_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    return {r["filename"]: r["count"] for r in records}


def workload_execs(records: list[dict[str, Any]]) -> dict[str, int]:
    """Exec counts without the runtime's own re-exec of /proc/self/exe."""
    return {f: c for f, c in exec_counts(records).items() if not f.startswith(RUNTIME_REEXECS)}


def condition(obj_status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions") or [] if c["type"] == kind), {})


def container_id(pod: dict[str, Any]) -> str:
    (status,) = pod["status"]["containerStatuses"]
    runtime, _, cid = status["containerID"].partition("://")
    assert runtime == "containerd", status
    return str(cid)


def source_result(loop: Loop, source: str) -> dict[str, Any]:
    """What `source`'s containers did on the node, as the NodeTracer reports it."""
    rows = (loop.nodetracer().get("status") or {}).get("sources") or []
    return next((r.get("results") or {} for r in rows if r["source"] == source), {})


def syscall_counts(result: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["count"] for s in result.get("syscalls") or []}


def trace_execs(loop: Loop) -> dict[str, int]:
    return workload_execs(loop.status("containertrace", TRACE, NS).get("execs") or [])


def summed(*counts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


# --- the tests, in order ---------------------------------------------------------------------


def test_node_tracer_reports_the_node(loop: Loop) -> None:
    assert loop.cluster.apiserver is not None
    nt = loop.podtrace.wait_agent_ready(loop.cluster.apiserver.binaries.kubectl)
    status = nt["status"]
    ctx = f"{json.dumps(status, indent=1)}{loop.logs()}"
    assert condition(status, "Ready")["status"] == "True", ctx
    assert status["backend"]["name"] == "bcc", ctx
    assert status["runtime"]["name"] == "containerd", ctx
    assert status["runtime"]["endpoint"] == loop.cluster.runtime_endpoint, ctx
    cgroup = status["cgroup"]
    assert cgroup["version"] == "hybrid", ctx
    assert cgroup["driver"] == "cgroupfs", ctx
    assert cgroup["hostNamespace"] is True, ctx
    # A cgroup's ID is its cgroup2 directory's inode number.
    kubepods = UNIFIED / loop.cluster.kubepods.lstrip("/")
    assert cgroup["kubepodsId"] == kubepods.stat().st_ino, ctx
    assert status["tracedContainers"] == 0, ctx


def test_kubectl_pod_is_traced_exactly_with_one_shell_event(loop: Loop) -> None:
    cluster = loop.cluster
    cluster.ensure_namespace(NS)
    cluster.kubectl("label", "namespace", NS, "env=prod", "--overwrite")
    cluster.kubectl("apply", "-f", str(POLICY_FILE))
    loop.apply({
        "apiVersion": API, "kind": "ContainerTrace",
        "metadata": {"name": TRACE, "namespace": NS},
        "spec": {"selector": {"matchLabels": WEB}, "seccompProfile": {"install": True}},
    })  # fmt: skip
    loop.wait_valid("tracingpolicy", POLICY)
    loop.wait_valid("containertrace", TRACE, NS)

    loop.run_pod("web-1", workload("web-1"), gated=True)
    pod = loop.wait_pod("web-1")
    uid, cid = pod["metadata"]["uid"], container_id(pod)

    # The NodeTracer: the pod's container traced, under its own cgroup, by both sources.
    def nt_done() -> dict[str, Any] | None:
        target = loop.nt_target("web-1")
        if not target or target["state"] != "Tracing":
            return None
        ours = workload_execs(source_result(loop, TRACE_SRC).get("execs") or [])
        return target if ours == WORKLOAD_EXECS else None

    target = loop.wait_for("web-1's execs in the NodeTracer", nt_done,
                           show=lambda: loop.nt_target("web-1"))
    ctx = f"{json.dumps(target, indent=1)}{loop.logs()}"
    assert target["containerId"] == cid, ctx
    cgroup_dir = UNIFIED / cluster.kubepods.lstrip("/") / "besteffort" / f"pod{uid}" / cid
    assert target["cgroupId"] == cgroup_dir.stat().st_ino, ctx
    assert target["identity"] == "cri", ctx
    nt = loop.nodetracer()
    assert {s["id"] for s in nt["spec"]["sources"]} == {POLICY_SRC, TRACE_SRC}, ctx
    assert nt["status"]["tracedContainers"] == 1, ctx
    assert target["eventsLost"] == 0, ctx  # bcc counts syscalls in maps: nothing lost
    policy_result = source_result(loop, POLICY_SRC)
    assert workload_execs(policy_result["execs"]) == WORKLOAD_EXECS, ctx
    assert policy_result["ruleMatches"] == [{"rule": "shell-exec", "count": SHELLS}], ctx

    # The ContainerTrace: phase, target, exact execs, and the histogram of that one
    # container as its node reports it (read together: the operator follows the agent).
    def ct_done() -> tuple[dict[str, Any], dict[str, Any]] | None:
        traced = source_result(loop, TRACE_SRC)
        status = loop.status("containertrace", TRACE, NS)
        hist = status.get("syscalls") or {}
        if status.get("phase") != "Tracing" or workload_execs(status.get("execs") or []) \
                != WORKLOAD_EXECS or not traced or hist.get("total") != traced["syscallsTotal"]:
            return None
        return status, traced

    status, traced = loop.wait_for("web-1's execs and syscalls in the ContainerTrace", ct_done,
                                   show=lambda: loop.status("containertrace", TRACE, NS))
    ctx = f"{json.dumps(status, indent=1)}\n{json.dumps(traced, indent=1)}{loop.logs()}"
    counted = syscall_counts(traced)
    assert counted["execve"] >= sum(WORKLOAD_EXECS.values()), ctx
    every = {name_of(n) for n in decode(traced["syscallSet"])}
    assert counted.keys() <= every and len(every) == len(counted) + traced["syscallsOmitted"], ctx
    assert traced["syscallsTotal"] >= sum(counted.values()) > 0, ctx
    assert status["targetCount"] == 1, ctx
    (ct_target,) = status["targets"]
    assert (ct_target["pod"], ct_target["podUid"], ct_target["container"]) == \
        ("web-1", uid, "main"), ctx
    assert (ct_target["state"], ct_target["containerId"], ct_target["node"]) == \
        ("Tracing", cid, cluster.node_name), ctx
    assert status["execsTotal"] == sum(exec_counts(status["execs"]).values()), ctx
    assert {e["container"] for e in status["execs"]} == {"main"}, ctx
    hist = status["syscalls"]
    assert hist["distinct"] == len(every), ctx
    top = {s["name"]: s["count"] for s in hist["top"]}
    assert top and all(counted[name] == count for name, count in top.items()), ctx
    assert status["seccompProfile"]["configMap"] == f"{TRACE}-seccomp", ctx

    # The TracingPolicy counts every match...
    def policy_done() -> dict[str, Any] | None:
        st = loop.status("tracingpolicy", POLICY)
        return st if st.get("eventsTotal") == SHELLS else None

    pstatus = loop.wait_for("the policy's eventsTotal", policy_done,
                            show=lambda: loop.status("tracingpolicy", POLICY))
    ctx = f"{json.dumps(pstatus, indent=1)}{loop.logs()}"
    assert pstatus["ruleCounts"] == [{"rule": "shell-exec", "count": SHELLS}], ctx
    assert pstatus["matchedContainers"] == 1 and pstatus["nodes"] == "1/1", ctx

    # ... while the Pod gets one Warning Event for the series, not one per shell (checked
    # again in the later tests, after many more agent passes).
    events = loop.wait_for("a ShellInContainer Event on web-1", loop.shell_events,
                           show=lambda: loop.events(NS))
    ctx = f"{json.dumps(events, indent=1)}{loop.logs()}"
    assert len(events) == 1, ctx
    (event,) = events
    assert event["type"] == "Warning", ctx
    assert event["regarding"]["uid"] == uid and event["regarding"]["namespace"] == NS, ctx
    assert event["related"]["kind"] == "TracingPolicy" and event["related"]["name"] == POLICY, ctx
    assert "/bin/sh" in event["note"] and "container main" in event["note"], ctx
    # The workload is done with its work and waits to be released.
    assert loop.logs_of("web-1", NS) == WORKLOAD_LOG, loop.logs()


def test_pod_started_later_is_traced_from_its_first_exec(loop: Loop) -> None:
    loop.run_pod("web-2", late_workload("web-2"), gated=True)
    pod = loop.wait_pod("web-2")

    both = summed(WORKLOAD_EXECS, LATE_EXECS)  # a source's results sum its containers

    def nt_done() -> dict[str, Any] | None:
        target = loop.nt_target("web-2")
        if not target or target["state"] != "Tracing":
            return None
        got = workload_execs(source_result(loop, TRACE_SRC).get("execs") or [])
        return target if got == both else None

    target = loop.wait_for("web-2's execs in the NodeTracer", nt_done,
                           show=lambda: loop.nt_target("web-2"))
    ctx = f"{json.dumps(target, indent=1)}{loop.logs()}"
    assert target["containerId"] == container_id(pod), ctx
    policy_result = source_result(loop, POLICY_SRC)
    assert workload_execs(policy_result["execs"]) == both, ctx
    assert policy_result["ruleMatches"] == [{"rule": "shell-exec", "count": SHELLS}], ctx

    # The agent's stream saw the entrypoint first, then the first command.
    lines = [ln for ln in loop.exec_lines("web-2")
             if not ln["filename"].startswith(RUNTIME_REEXECS)]
    assert [ln["filename"] for ln in lines[:2]] == ["/bin/busybox", "/bin/echo"], ctx
    assert all(ln["container_id"] == container_id(pod) for ln in lines), ctx

    # The trace sums both pods; the policy saw no new shell.
    expected = summed(WORKLOAD_EXECS, LATE_EXECS)
    status = loop.wait_for("both pods' execs in the ContainerTrace",
                           lambda: (s := loop.status("containertrace", TRACE, NS))
                           and workload_execs(s.get("execs") or []) == expected and s,
                           show=lambda: loop.status("containertrace", TRACE, NS))
    ctx = f"{json.dumps(status, indent=1)}{loop.logs()}"
    assert status["targetCount"] == 2, ctx
    assert {(t["pod"], t["state"]) for t in status["targets"]} == \
        {("web-1", "Tracing"), ("web-2", "Tracing")}, ctx
    pstatus = loop.status("tracingpolicy", POLICY)
    assert pstatus["eventsTotal"] == SHELLS and pstatus["matchedContainers"] == 2, \
        f"{json.dumps(pstatus, indent=1)}{loop.logs()}"
    assert loop.logs_of("web-2", NS) == "first\n", loop.logs()
    assert loop.shell_events("web-2") == [], loop.logs()
    assert len(loop.shell_events("web-1")) == 1, loop.logs()


def _load_with_libseccomp(profile: dict[str, Any]) -> int:
    """Build the profile's filter with libseccomp; returns how many rules it holds."""
    seccomp = pytest.importorskip("seccomp", reason="python3-seccomp (libseccomp) is missing")
    default = profile["defaultAction"]
    assert default == "SCMP_ACT_ERRNO"
    arches = {"SCMP_ARCH_X86_64": seccomp.Arch.X86_64, "SCMP_ARCH_X86": seccomp.Arch.X86,
              "SCMP_ARCH_X32": seccomp.Arch.X32, "SCMP_ARCH_AARCH64": seccomp.Arch.AARCH64,
              "SCMP_ARCH_ARM": seccomp.Arch.ARM}  # fmt: skip
    flt = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
    for arch in profile["architectures"]:
        if not flt.exist_arch(arches[arch]):  # the native one is there already
            flt.add_arch(arches[arch])
    rules = 0
    for group in profile["syscalls"]:
        assert group["action"] == "SCMP_ACT_ALLOW", group
        for name in group["names"]:
            assert seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0, name
            flt.add_rule(seccomp.ALLOW, name)
            rules += 1
    with open(os.devnull, "wb") as sink:
        flt.export_bpf(sink)  # compiles the filter
    return rules


# What runc does before its marker (prctl(PR_GET_PDEATHSIG)) and the workloads here never do.
RUNTIME_ONLY = {"mount", "pivot_root", "umount2", "setns", "unshare", "keyctl", "sethostname"}
TOOLS_NS, TOOLS_TRACE = "tools", "rec-tools"


def confined(profile: str, escalation: bool | None = None) -> dict[str, Any]:
    """A container securityContext running `profile` (under the kubelet's seccomp dir);
    `escalation` sets allowPrivilegeEscalation (runc's no_new_privs is its negation)."""
    context: dict[str, Any] = {"seccompProfile": {"type": "Localhost",
                                                  "localhostProfile": profile}}
    if escalation is not None:
        context["allowPrivilegeEscalation"] = escalation
    return context


def run_confined(loop: Loop, name: str, script: str, context: dict[str, Any],
                 container: str = "main") -> None:  # fmt: skip
    manifest = loop.cluster.pod_manifest(name, entrypoint(script), namespace=REPLAY_NS,
                                         container_name=container)
    manifest["spec"]["containers"][0]["securityContext"] = context
    loop.apply(manifest)


def test_generated_seccomp_profile_runs_the_workload_and_denies_the_rest(loop: Loop) -> None:
    cluster = loop.cluster

    def stable_profile() -> tuple[dict[str, Any], dict[str, Any]] | None:
        status = loop.status("containertrace", TRACE, NS)
        listed = (status.get("seccompProfile") or {}).get("containers") or []
        cm = loop.get("configmap", f"{TRACE}-seccomp", NS)
        text = ((cm or {}).get("data") or {}).get("main.json")
        if not text or len(listed) != 1 or listed[0]["replicas"] != 2:
            return None
        profile = json.loads(text)
        names = [n for group in profile["syscalls"] for n in group["names"]]
        return (profile, status) if names == [s["name"] for s in listed[0]["syscalls"]] else None

    profile, status = loop.wait_for("main's profile of both pods in the ConfigMap and status",
                                    stable_profile,
                                    show=lambda: loop.status("containertrace", TRACE, NS))
    names = [n for group in profile["syscalls"] for n in group["names"]]
    ctx = f"{json.dumps(profile)}\n{json.dumps(status, indent=1)}{loop.logs()}"
    (main,) = status["seccompProfile"]["containers"]
    assert (main["container"], main["key"], main["startSeen"]) == ("main", "main.json", 2), ctx
    # Both pods made the workload's core; coverage says which calls only one pod made.
    coverage = {s["name"]: s["replicas"] for s in main["syscalls"]}
    assert all(coverage[n] == 2 for n in ("execve", "read", "exit_group", "wait4")), ctx
    assert set(coverage.values()) <= {1, 2}, ctx
    print(f"\nprofile of main: {len(names)} syscalls (workload only); the container did "
          f"{status['syscalls']['distinct']} distinct syscalls in all, runc's set-up "
          f"included; made by one pod only: {sorted(n for n, c in coverage.items() if c == 1)}")
    assert profile["architectures"][0] == "SCMP_ARCH_X86_64", ctx
    assert {"execve", "read", "exit_group"} <= set(names), ctx
    # runc's set-up before its marker is not in it; what runc does after it is.
    assert not RUNTIME_ONLY & set(names), ctx
    assert {"capset", "setgroups", "prctl"} <= set(names), ctx
    assert status["syscalls"]["distinct"] > len(names), ctx
    assert condition(status, "ProfileComplete")["status"] == "True", ctx
    # What the denied pod below calls: busybox mkdir uses mkdir(2), which the workload never
    # does (runc's setup in the container uses mkdirat). (Debian's busybox-static has no
    # nice applet, so setpriority through /bin/nice cannot be tried here.)
    assert "mkdir" not in names, ctx
    assert _load_with_libseccomp(profile) == len(names) == len(set(names)), ctx
    assert status["seccompProfile"]["syscalls"] == len(names), ctx

    # install: true put that profile on the node, where the kubelet looks for it, in a
    # directory of the trace's namespace; status says the path and that the node has it.
    own = f"podtrace/{NS}/{TRACE}-main.json"

    def installed() -> dict[str, Any] | None:
        status = loop.status("containertrace", TRACE, NS)
        done = condition(status, "ProfileInstalled")
        where = (status.get("seccompProfile") or {}).get("installed") or {}
        current = where.get("installedNodes") == 1  # the newest version, not an older one
        return status if done.get("status") == "True" and current else None

    status = loop.wait_for("the profile installed on the node", installed,
                           show=lambda: loop.status("containertrace", TRACE, NS))
    ctx = f"{json.dumps(status, indent=1)}{loop.logs()}"
    (main,) = status["seccompProfile"]["containers"]
    assert main["localhostProfile"] == own, ctx
    assert status["seccompProfile"]["installed"] == {
        "nodes": [cluster.node_name], "installedNodes": 1, "totalNodes": 1, "missing": []}, ctx

    def same_as_recorded() -> bool:  # what the node holds is the ConfigMap's profile
        text = loop.get("configmap", f"{TRACE}-seccomp", NS)["data"]["main.json"]
        path = cluster.seccomp_dir / own
        return path.exists() and json.loads(path.read_text()) == json.loads(text)

    loop.wait_for("the node's file the ConfigMap's profile", same_as_recorded)
    assert own in condition(status, "ProfileInstalled")["message"], ctx
    assert [e for e in loop.events(NS) if e.get("reason") == "ProfileInstalled"], ctx
    cluster.ensure_namespace(REPLAY_NS)
    mkdir = "/bin/mkdir /tmp/made && echo made"
    runs = {
        # runc installs the filter before it sets user, groups and capabilities...
        "replay": (workload(None), confined(own, escalation=True)),
        # ... or, with no_new_privs, just before it execs the workload.
        "replay-nnp": (workload(None), confined(own, escalation=False)),
        "denied": (mkdir, confined(own)),
        "unconfined": (mkdir, {}),  # the same without the profile: mkdir works
    }
    for name, (script, context) in runs.items():
        run_confined(loop, name, script, context)

    for name in ("replay", "replay-nnp"):
        loop.wait_pod(name, REPLAY_NS, phase="Succeeded")
        assert loop.logs_of(name, REPLAY_NS) == WORKLOAD_LOG, loop.logs()
    loop.wait_pod("unconfined", REPLAY_NS, phase="Succeeded")
    # What ran was the profile as recorded then; the nodes get its new versions as well.
    assert loop.logs_of("unconfined", REPLAY_NS) == "made\n", loop.logs()
    denied = loop.wait_pod("denied", REPLAY_NS, phase="Failed")
    (state,) = denied["status"]["containerStatuses"]
    assert state["state"]["terminated"]["exitCode"] != 0, f"{state}{loop.logs()}"
    log = loop.logs_of("denied", REPLAY_NS)
    assert log == "mkdir: can't create directory '/tmp/made': Operation not permitted\n", \
        f"{log}{loop.logs()}"
    # Nothing of this ran in a selected pod: the trace still holds the two workloads.
    assert trace_execs(loop) == summed(WORKLOAD_EXECS, LATE_EXECS), loop.logs()


def test_a_workload_that_calls_a_set_up_syscall_keeps_it(loop: Loop) -> None:
    # busybox's hostname and unshare make sethostname(2) and unshare(2), refused without
    # CAP_SYS_ADMIN but made: the profile of that container allows them.
    cluster = loop.cluster
    cluster.ensure_namespace(TOOLS_NS)
    loop.apply({
        "apiVersion": API, "kind": "ContainerTrace",
        "metadata": {"name": TOOLS_TRACE, "namespace": TOOLS_NS},
        "spec": {"selector": {"matchLabels": {"app": "tools"}},
                 "seccompProfile": {"install": True}},
    })  # fmt: skip
    loop.wait_valid("containertrace", TOOLS_TRACE, TOOLS_NS)
    # It waits on its gate until its profile is read: a pod gone before its node's agent
    # reported it would not be a target.
    script = (f"/bin/busybox hostname podtrace-x; /bin/busybox unshare -m /bin/true; "
              f"echo done; "
              f"read line < {GATE_MOUNT}/namer")
    manifest = cluster.pod_manifest("namer", entrypoint(script), namespace=TOOLS_NS,
                                    labels={"app": "tools"}, container_name="namer")
    os.mkfifo(loop.gate_dir / "namer", 0o600)
    manifest["spec"]["volumes"] = [
        {"name": "gate", "hostPath": {"path": str(loop.gate_dir), "type": "Directory"}}]
    manifest["spec"]["containers"][0]["volumeMounts"] = [{"name": "gate",
                                                          "mountPath": GATE_MOUNT}]
    loop.apply(manifest)
    loop.wait_pod("namer", TOOLS_NS)

    def recorded() -> dict[str, Any] | None:
        cm = loop.get("configmap", f"{TOOLS_TRACE}-seccomp", TOOLS_NS)
        text = ((cm or {}).get("data") or {}).get("namer.json")
        profile = json.loads(text) if text else None
        names = {n for g in (profile or {}).get("syscalls", []) for n in g["names"]}
        return profile if {"sethostname", "unshare", "exit_group"} <= names else None

    profile = loop.wait_for("namer's profile with sethostname and unshare", recorded,
                            show=lambda: loop.status("containertrace", TOOLS_TRACE, TOOLS_NS))
    names = {n for g in profile["syscalls"] for n in g["names"]}
    # the runtime's other set-up calls stay out
    assert not (RUNTIME_ONLY - {"sethostname", "unshare"}) & names, f"{profile}{loop.logs()}"
    loop.release("namer")
    loop.wait_pod("namer", TOOLS_NS, phase="Succeeded")
    # Its stderr (the refused calls' messages) and stdout are copied to the log by two
    # readers: "done" need not be the last line.
    assert "done" in loop.logs_of("namer", TOOLS_NS).splitlines(), loop.logs()

    # Its profile is installed on the node beside the other trace's; deleting the trace
    # removes it (and its install ConfigMap), and leaves the other one.
    installed = cluster.seccomp_dir / "podtrace" / TOOLS_NS / f"{TOOLS_TRACE}-namer.json"
    other = cluster.seccomp_dir / "podtrace" / NS / f"{TRACE}-main.json"
    loop.wait_for(f"{installed.name} on the node", installed.exists,
                  show=lambda: loop.status("containertrace", TOOLS_TRACE, TOOLS_NS))
    publish = f"seccomp.{TOOLS_NS}.{TOOLS_TRACE}"
    assert loop.get("configmap", publish, "podtrace-system") is not None, loop.logs()
    # install: false takes it off the node, true puts it back.
    for install, present in ((False, False), (True, True)):
        patch = json.dumps({"spec": {"seccompProfile": {"install": install}}})
        loop.cluster.kubectl("patch", "containertrace", TOOLS_TRACE, "-n", TOOLS_NS,
                             "--type=merge", "-p", patch)  # fmt: skip
        loop.wait_for(f"{installed.name} {'back' if present else 'removed'} (install: "
                      f"{install})", lambda p=present: installed.exists() == p,
                      show=lambda: loop.status("containertrace", TOOLS_TRACE, TOOLS_NS))
        assert (loop.get("configmap", publish, "podtrace-system") is not None) == present
    status = loop.status("containertrace", TOOLS_TRACE, TOOLS_NS)
    assert status["seccompProfile"]["containers"][0]["localhostProfile"] == \
        f"podtrace/{TOOLS_NS}/{installed.name}", json.dumps(status, indent=1)
    loop.cluster.kubectl("delete", "containertrace", TOOLS_TRACE, "-n", TOOLS_NS, "--wait=true")
    loop.wait_for(f"{installed.name} removed", lambda: not installed.exists(),
                  show=lambda: sorted(p.name for p in installed.parent.iterdir()))
    assert loop.get("configmap", publish, "podtrace-system") is None, loop.logs()
    assert other.exists(), loop.logs()


def test_counts_of_pods_that_exited_stay(loop: Loop) -> None:
    before = loop.status("containertrace", TRACE, NS)
    for name in ("web-1", "web-2"):
        loop.release(name)
    for name, log in (("web-1", WORKLOAD_LOG + "released go\n"),
                      ("web-2", "first\nreleased go\n")):
        loop.wait_pod(name, phase="Succeeded")
        assert loop.logs_of(name, NS) == log, loop.logs()

    # Once the operator has seen the pods end (no target of theirs Tracing any more),
    # what they did stays counted: the trace's results and the policy's rule matches.
    uids = {loop.pods[n]["metadata"]["uid"] for n in ("web-1", "web-2")}

    def settled() -> dict[str, Any] | None:
        status = loop.status("containertrace", TRACE, NS)
        live = [t for t in status.get("targets") or [] if t["podUid"] in uids
                and t["state"] == "Tracing"]
        return None if live else status

    status = loop.wait_for("the trace to see web-1 and web-2 end", settled,
                           show=lambda: loop.status("containertrace", TRACE, NS))
    ctx = f"{json.dumps(status, indent=1)}{loop.logs()}"
    assert workload_execs(status.get("execs") or []) == summed(WORKLOAD_EXECS, LATE_EXECS), ctx
    assert status["execsTotal"] == before["execsTotal"], ctx  # the two pods exec'd no more
    assert status["syscalls"]["total"] >= before["syscalls"]["total"], ctx
    assert status["seccompProfile"] and status["seccompProfile"]["syscalls"] >= \
        before["seccompProfile"]["syscalls"], ctx
    assert loop.status("tracingpolicy", POLICY).get("eventsTotal") == SHELLS, ctx


def test_deleting_policy_and_trace_stops_tracing(loop: Loop) -> None:
    script = "while :; do /bin/true; echo tick; sleep 0.2; done"
    loop.run_pod("web-loop", script)
    loop.wait_pod("web-loop")
    loop.wait_for("web-loop's /bin/true execs in the agent's stream",
                  lambda: sum(ln["filename"] == "/bin/true"
                              for ln in loop.exec_lines("web-loop")) >= 3)

    loop.cluster.kubectl("delete", "tracingpolicy", POLICY, "--wait=true")
    loop.cluster.kubectl("delete", "containertrace", TRACE, "-n", NS, "--wait=true")

    def stopped() -> dict[str, Any] | None:
        nt = loop.nodetracer()
        spec, status = nt.get("spec") or {}, nt.get("status") or {}
        if spec.get("sources") or spec.get("targets") or status.get("tracedContainers") != 0:
            return None
        if status.get("observedGeneration") != nt["metadata"]["generation"]:
            return None
        return nt

    nt = loop.wait_for("the NodeTracer without sources and traced containers", stopped,
                       show=lambda: {k: v for k, v in loop.nodetracer().items() if k != "metadata"})
    assert nt["status"]["targets"] == [], f"{nt['status']}{loop.logs()}"

    # The pod keeps exec'ing (its log grows) and the agent reports none of it.
    before = len(loop.exec_lines("web-loop"))
    ticks = loop.logs_of("web-loop", NS).count("tick")
    began = time.monotonic()
    loop.wait_for("web-loop to go on for 3 s", lambda: time.monotonic() - began >= 3.0
                  and loop.logs_of("web-loop", NS).count("tick") >= ticks + 10)
    after = loop.exec_lines("web-loop")
    assert len(after) == before, f"new exec lines: {after[before:][:5]}{loop.logs()}"
    assert loop.status("pod", "web-loop", NS).get("phase") == "Running", loop.logs()
