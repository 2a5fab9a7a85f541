"""`podtrace-agent run` as the core's Mode, over a scripted backend and an
in-memory API edge: a container's sub-cgroups follow its own cgroup (traced
with its request, untraced with it, their events and counts its), a container
that goes leaves nothing behind, and a relist forgets the pods deleted while
the watch was away. (tests/cluster/test_e2e_loop.py runs the real thing.)"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podtrace_agent.backend import (
    BackendStats,
    CgroupEvent,
    Event,
    ExecEvent,
    KubepodsRoot,
    SourceLimits,
)
from podtrace_agent.cluster.agent import Agent, AgentOptions
from podtrace_agent.cluster.metrics import AgentMetrics
from podtrace_agent.core import Core
from podtrace_agent.cri.endpoints import RuntimeReport
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
)
from podtrace_agent.scan import container_cgroup
from podtrace_api.nodeconfig import Probe
from podtrace_api.nodetracer import BackendName, CgroupVersion
from podtrace_api.syscalls import number_of
from podtrace_api.syscallset import decode

UID = "11111111-2222-4333-8444-555555555555"
A, B = "a" * 64, "b" * 64
OTHER = "99999999-2222-4333-8444-555555555555"
POD = f"kubepods/besteffort/pod{UID}"
OWN, SUB = f"{POD}/crio-{A}.scope", f"{POD}/crio-{A}.scope/container"
SHELLS = "TracingPolicy/shells"
PTRACE = number_of("ptrace")
assert PTRACE is not None


@dataclass
class Backend:
    """Records what is traced with which mask; plays events back."""

    events: list[Event] = field(default_factory=list)
    counts: dict[int, dict[int, int]] = field(default_factory=dict)
    masks: dict[int, int] = field(default_factory=dict)
    marks: dict[int, dict[int, int]] = field(default_factory=dict)  # markers()
    name: str = "scripted"
    limits: SourceLimits = field(default_factory=SourceLimits)

    def trace(self, cgroup_id: int, path: str, mask: Probe, *_: Any) -> None:
        self.masks[cgroup_id] = int(mask)

    def untrace(self, cgroup_id: int) -> None:
        self.masks.pop(cgroup_id, None)

    def poll(self, timeout: float) -> list[Event]:
        events, self.events = self.events, []
        return events

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        return self.counts

    def markers(self) -> dict[int, dict[int, int]]:
        return self.marks

    def stats(self) -> BackendStats:
        return BackendStats(0, 0)


class Kube:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.answer = threading.Event()  # cleared: an apiserver that hangs
        self.answer.set()

    def patch_status(self, status: dict[str, Any]) -> None:
        self.answer.wait(30)
        self.statuses.append(status)

    def write_event(self, **event: Any) -> None:
        self.answer.wait(30)
        self.events.append(event)


def nodetracer(targets: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "generation": 1}, "spec": {
        "sources": [{"id": SHELLS, "kind": "TracingPolicy", "name": "shells",
                     "rules": [{"name": "sh", "reason": "Shell", "execFilenames": ["/bin/sh"]},
                               {"name": "pt", "reason": "Ptrace", "syscalls": ["ptrace"]}]}],
        "targets": [{"podUid": UID, "container": "app", "namespace": "ns", "pod": "web",
                     "sources": [SHELLS]}] if targets else [],
    }}


def pod(uid: str = UID, name: str = "web", cid: str = A) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": "ns", "name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            "status": {"containerStatuses": [{"name": "app", "containerID": f"cri-o://{cid}",
                                              "state": {"running": {}}}]}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    backend: Backend
    kube: Kube
    agent: Agent
    core: Core
    lines: list[dict[str, Any]]
    clock: Clock

    def second(self) -> None:
        """One turn a second later: counts read, Events and status written (by the
        agent's writer thread: waited for here)."""
        self.clock.now += 1.0
        self.core.step(0)
        assert self.agent.sender.idle(5)


def node(tmp_path: Path) -> Node:
    backend, kube = Backend(), Kube()
    report = DiscoveryReport(
        kernel=KernelReport("6.18", True, "/sys/kernel/tracing"),
        cgroup=CgroupReport(CgroupVersion.V2, root=str(tmp_path), kubepods_path="kubepods",
                            kubepods_id=42, kubepods_level=1),
        bcc=BccCheck(True, "ok"), backend=BackendReport(BackendName.BCC, "ok"),
    )
    lines: list[dict[str, Any]] = []
    agent = Agent(options=AgentOptions(node="n1", status_interval=0), report=report,
                  backend=backend, kube=kube, metrics=AgentMetrics("n1"),  # type: ignore[arg-type]
                  runtime_report=RuntimeReport(),
                  emit=lines.append)  # type: ignore[arg-type]
    clock = Clock()
    core = Core(backend, KubepodsRoot(tmp_path, "kubepods", 42, 1), agent,  # type: ignore[arg-type]
                counts_every=1.0, clock=clock)
    agent.containers = core.containers
    return Node(backend, kube, agent, core, lines, clock)


def test_sub_cgroups_follow_their_container(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.agent.inbox.put(("nodetracer", "SYNC", {"items": [nodetracer()]}))
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod()]}))
    n.backend.events = [CgroupEvent("mkdir", 10, 4, f"/{OWN}", 0, traced=True),
                        CgroupEvent("mkdir", 11, 5, f"/{SUB}", 0, traced=True)]
    n.core.step(0)
    mask = n.backend.masks[10]
    assert mask & Probe.EXEC and n.backend.masks[11] == mask  # the target's request on both
    n.backend.events = [ExecEvent(11, 5, 1, 0, "sh", "/bin/sh", 0)]
    n.backend.counts = {10: {PTRACE: 1}, 11: {PTRACE: 2}}
    n.second()
    (line,) = [x for x in n.lines if x["type"] == "exec"]
    assert (line["pod"], line["container"], line["rules"]) == ("web", "app", [f"{SHELLS}#sh"])
    # the sub-cgroup's calls are the container's: one Event per rule, ptrace counted 1 + 2
    assert sorted((e["action"], e["count"]) for e in n.kube.events) == [("pt", 3), ("sh", 1)]

    # a late sub-cgroup gets the request at once; the spec dropping the target untraces all
    n.backend.events = [CgroupEvent("mkdir", 12, 5, f"/{SUB}2", 0)]
    n.core.step(0)
    assert n.backend.masks[12] == mask
    n.agent.inbox.put(("nodetracer", "MODIFIED", nodetracer(targets=False)))
    n.core.step(0)
    assert n.backend.masks == {}


def test_a_container_that_goes_leaves_nothing(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.agent.inbox.put(("nodetracer", "SYNC", {"items": [nodetracer()]}))
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod()]}))
    n.backend.events = [CgroupEvent("mkdir", 10, 4, f"/{OWN}", 0, traced=True),
                        CgroupEvent("mkdir", 11, 5, f"/{SUB}", 0, traced=True)]
    n.core.step(0)
    n.backend.counts = {10: {PTRACE: 1}, 11: {PTRACE: 2}}
    n.backend.events = [CgroupEvent("rmdir", 11, 5, f"/{SUB}", 0),
                        CgroupEvent("rmdir", 10, 4, f"/{OWN}", 0)]
    n.second()
    n.backend.counts = {}  # read once: the backend forgets removed cgroups
    n.second()
    assert len(n.core.containers) == 0 and n.core.containers.cgroup_count == 0
    assert n.agent.state.cgroups == {} and n.agent._holds == {}
    assert [e["count"] for e in n.kube.events] == [3]  # its counts were read before it went


def test_a_relist_forgets_pods_deleted_meanwhile(tmp_path: Path) -> None:
    n = node(tmp_path)
    spec = nodetracer()
    spec["spec"]["targets"].append({"podUid": OTHER, "container": "app", "namespace": "ns",
                                    "pod": "gone", "sources": [SHELLS]})
    n.agent.inbox.put(("nodetracer", "SYNC", {"items": [spec]}))
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod(), pod(OTHER, "gone", B)]}))
    n.backend.events = [CgroupEvent("mkdir", 20, 4, f"/kubepods/besteffort/pod{OTHER}/{B}", 0)]
    n.core.step(0)
    n.backend.events = [ExecEvent(20, 5, 1, 0, "sh", "/bin/sh", 0)]
    n.core.step(0)
    assert [k[0] for k in n.agent._first_seen] == [OTHER]
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod()]}))  # the watch came back without it
    n.core.step(0)
    assert set(n.agent.state.pods) == {UID}
    assert n.agent._first_seen == {} and n.agent.limiter.due(1e9) == []


def test_the_loop_does_not_wait_for_the_apiserver(tmp_path: Path) -> None:
    n = node(tmp_path)
    n.agent.inbox.put(("nodetracer", "SYNC", {"items": [nodetracer()]}))
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod()]}))
    n.backend.events = [CgroupEvent("mkdir", 10, 4, f"/{OWN}", 0, traced=True)]
    n.core.step(0)
    n.kube.answer.clear()
    start = time.monotonic()
    for _ in range(3):
        n.backend.events = [ExecEvent(10, 5, 1, 0, "sh", "/bin/sh", 0)]
        n.clock.now += 1.0
        n.core.step(0)  # a status and an Event to write each turn: none is waited for
    assert time.monotonic() - start < 2.0
    assert n.kube.events == [] and not n.agent.sender.idle(0.1)
    n.kube.answer.set()
    n.second()
    assert n.kube.statuses and [e["count"] for e in n.kube.events] == [1]  # the one in flight
    n.clock.now += 30  # the series' interval: the other two matches go out as one update
    n.second()
    n.second()
    assert [e["count"] for e in n.kube.events] == [1, 3]


TRACE = "ContainerTrace/ns/rec"
MOUNT, READ, PRCTL = number_of("mount"), number_of("read"), number_of("prctl")


def profile_trace(uid: str = UID) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "generation": 1}, "spec": {
        "sources": [{"id": TRACE, "kind": "ContainerTrace", "name": "rec", "namespace": "ns",
                     "rules": [], "profile": True}],
        "targets": [{"podUid": uid, "container": "app", "namespace": "ns", "pod": "web",
                     "sources": [TRACE]}],
    }}  # fmt: skip


def test_profile_rows_hold_what_the_workload_did_after_the_runtime_s_marker(
    tmp_path: Path,
) -> None:
    n = node(tmp_path)
    n.agent.inbox.put(("nodetracer", "SYNC", {"items": [profile_trace()]}))
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod()]}))
    n.backend.events = [CgroupEvent("mkdir", 10, 4, f"/{OWN}", 0, traced=True)]
    n.core.step(0)
    # runc still sets the container up (mkdir'd, no marker, no exec): nothing recorded yet
    n.backend.counts = {10: {MOUNT: 3, PRCTL: 1}}
    n.second()
    assert n.kube.statuses[-1].get("profiles", []) == []
    # past the marker: what grew after it is the workload's
    n.backend.marks = {10: {MOUNT: 3, PRCTL: 1}}
    n.backend.counts = {10: {MOUNT: 3, PRCTL: 4, READ: 7}}
    n.backend.events = [ExecEvent(10, 5, 1, 0, "app", "/bin/app", 0)]
    n.second()
    (row,) = n.kube.statuses[-1]["profiles"]
    assert (row["podUid"], row["container"], row["startSeen"]) == (UID, "app", True)
    assert decode(row["syscallSet"]) == {PRCTL, READ}
    assert n.kube.statuses[-1].get("profilesOmitted", 0) == 0


def test_a_container_traced_while_running_records_everything_without_its_start(
    tmp_path: Path,
) -> None:
    n = node(tmp_path)
    n.agent.inbox.put(("nodetracer", "SYNC", {"items": [profile_trace()]}))
    n.agent.inbox.put(("pods", "SYNC", {"items": [pod()]}))
    found = container_cgroup("kubepods", 10, OWN)
    assert found is not None
    n.core.adopt([found])  # found by the scan: it ran before
    n.core.step(0)
    n.backend.counts = {10: {READ: 2, MOUNT: 1}}
    n.second()
    (row,) = n.kube.statuses[-1]["profiles"]
    assert row.get("startSeen", False) is False and decode(row["syscallSet"]) == {READ, MOUNT}
