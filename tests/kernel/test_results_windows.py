"""Issue 10 parts 4 and 7 on the real kernel, through both backends and the agent's
own node state: a source counts only what a container did after it began tracing
it, with exact getppid counts; a container that leaves a source and comes back is
counted once per stretch; the syscall set of a source (its seccomp profile) holds
only its own window; and events ftrace loses mark the container, the source and the
ContainerTrace's profile as incomplete.

The helper (helper.c) joins the container's cgroup, waits on a fifo, makes exactly
N getppid calls and execs a program: /bin/sync (the sync syscall, made by nothing
else here) marks the runs the trace must not see.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from kernel_support import (
    Collector,
    Hierarchy,
    cgroup_id,
    require_tracefs,
    run_helper,
    wait_noticed,
)

from podtrace_agent.backend import (
    Backend,
    BackendOptions,
    BackendStats,
    ExitEvent,
    KubepodsRoot,
)
from podtrace_agent.cluster.apply import apply_request, remove
from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView
from podtrace_agent.cluster.state import KnownCgroup, NodeState
from podtrace_agent.cluster.status import Health, node_status
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
)
from podtrace_api.conditions import get_condition
from podtrace_api.containertrace import ContainerTraceSpec
from podtrace_api.nodeconfig import Probe
from podtrace_api.nodetracer import (
    BackendName,
    CgroupVersion,
    NodeTracerSpec,
    NodeTracerStatus,
    RuntimeStatus,
)
from podtrace_api.syscalls import name_of, number_of
from podtrace_api.syscallset import decode
from podtrace_operator.reports import node_report
from podtrace_operator.tallies import Ledger
from podtrace_operator.trace_status import TraceInput, trace_status

WALL = datetime(2026, 1, 1, tzinfo=UTC)
GETPPID, SYNC = number_of("getppid"), number_of("sync")
POLICY, TRACE = "TracingPolicy/p", "ContainerTrace/ns/t"
EXITS = {"processes": {"exec": True, "exit": True}}  # a run is over at its exit event
SOURCES = {
    POLICY: {"id": POLICY, "kind": "TracingPolicy", "name": "p", "observe": EXITS},
    TRACE: {"id": TRACE, "kind": "ContainerTrace", "name": "t", "namespace": "ns",
            "observe": EXITS},
}


class Node:
    """The agent's node state over a real backend, with one target: `container`."""

    def __init__(self, backend: Backend, hierarchy: Hierarchy, container: Path) -> None:
        self.backend, self.cid = backend, cgroup_id(container)
        self.state = NodeState(limits=backend.limits)
        self.generation = 0
        name = container.name
        self.state.set_pod(PodView("u1", "ns", "p1", {"app": PodContainer(name, "img", True)}))
        self.state.add_cgroup(KnownCgroup(CgroupRef(self.cid, hierarchy.rel(container)), name,
                                          "u1", "app"))

    def select(self, *sources: str) -> None:
        """The operator's spec: `sources` select the container (none: nothing does)."""
        self.generation += 1
        self.state.set_spec(NodeTracerSpec.model_validate({
            "sources": [SOURCES[s] for s in sources],
            "targets": [{"podUid": "u1", "container": "app", "namespace": "ns", "pod": "p1",
                         "sources": list(sources)}] if sources else [],
        }), self.generation)
        changes, _ = self.state.replan(float(self.generation), WALL)
        outcomes = {c: apply_request(self.backend, c, r, self.state.sources)
                    for c, r in changes.trace.items()}
        changes.untrace = {c for c in changes.untrace if remove(self.backend, c)}
        self.state.applied(changes, outcomes)
        if self.state.needs_counts():  # as the agent does: the new window's baseline, now
            self.take_counts()

    def take_counts(self) -> None:
        counts = self.backend.syscall_counts()
        self.state.on_counts({self.cid: counts.get(self.cid, {})}, self.backend.stats().lost)

    def run(self, collector: Collector, helper: Path, container: Path, tmp_path: Path, n: int,
            program: str) -> None:
        """One helper run in the container, every event of it given to the state."""
        run = run_helper(helper, container, n, (program,), wait_for_go=True, tmp_path=tmp_path)
        wait_noticed(collector, self.cid, run.pid)
        seen = len(collector.events)
        run.release()
        run.wait()
        collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.pid == run.pid)
        for event in collector.events[seen:]:
            if event.cgroup_id == self.cid:
                self.state.on_event(event, WALL)
        self.take_counts()

    def run_untraced(self, helper: Path, container: Path, tmp_path: Path, n: int) -> None:
        """A helper run while nothing traces the container."""
        run = run_helper(helper, container, n, ("/bin/true",), wait_for_go=False,
                         tmp_path=tmp_path)
        assert run.wait() == 0

    def getppid(self, source: str) -> int:
        return self.state.observed(source).syscalls.get(GETPPID, 0)


def test_each_source_counts_from_when_it_began_and_never_twice(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()  # auto-traced from its mkdir by both backends
    node = Node(collector.backend, hierarchy, container)
    try:
        node.select(POLICY)
        node.run(collector, helper, container, tmp_path, 1000, "/bin/sync")
        node.select(POLICY, TRACE)  # the trace begins while the policy traces the container
        node.run(collector, helper, container, tmp_path, 2000, "/bin/true")
        assert (node.getppid(POLICY), node.getppid(TRACE)) == (3000, 2000)

        node.select(POLICY)  # the container leaves the trace's targets...
        node.run(collector, helper, container, tmp_path, 400, "/bin/sync")
        node.select(POLICY, TRACE)  # ...and comes back
        node.run(collector, helper, container, tmp_path, 50, "/bin/true")
        assert (node.getppid(POLICY), node.getppid(TRACE)) == (3450, 2050)

        policy, trace = node.state.observed(POLICY), node.state.observed(TRACE)
        assert policy.execs == {"/bin/sync": 2, "/bin/true": 2}
        assert trace.execs == {"/bin/true": 2}
        assert policy.syscalls[SYNC] == 2 and SYNC not in trace.syscalls

        status = _status(node.state)
        rows = {r.source: r.results for r in status.sources}
        trace_set = {name_of(n) for n in decode(rows[TRACE].syscall_set)}
        assert "getppid" in trace_set and "sync" not in trace_set  # its profile: its window
        assert "sync" in {name_of(n) for n in decode(rows[POLICY].syscall_set)}
        assert {s.name: s.count for s in rows[TRACE].syscalls}["getppid"] == 2050
        assert status.targets[0].events_lost == 0
    finally:
        node.select()  # nothing selects it: untraced


def test_a_container_untraced_and_traced_again_is_counted_once_per_stretch(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()
    node = Node(collector.backend, hierarchy, container)
    try:
        node.select(TRACE)
        node.run(collector, helper, container, tmp_path, 700, "/bin/true")
        node.select()  # nothing selects it: untraced, the backend drops its counts
        assert node.cid not in collector.backend.syscall_counts()
        node.run_untraced(helper, container, tmp_path, 5000)
        node.select(TRACE)  # traced again, from zero
        node.run(collector, helper, container, tmp_path, 80, "/bin/true")
        assert node.getppid(TRACE) == 780
        assert node.state.observed(TRACE).execs == {"/bin/true": 2}
    finally:
        node.select()


def test_events_ftrace_loses_mark_the_counts_and_the_profile_incomplete(
    kubepods: KubepodsRoot, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    require_tracefs()
    from podtrace_agent.ftrace.backend import FtraceBackend

    # One page per CPU and a reader that wakes every 50 ms: a burst overruns it.
    backend = FtraceBackend(kubepods, BackendOptions(auto_trace_mask=Probe(0)),
                            buffer_size_kb=4)
    backend.start()
    collector = Collector(backend)
    container = hierarchy.container()
    node = Node(backend, hierarchy, container)
    n = 300_000
    try:
        node.select(TRACE)
        node.run(collector, helper, container, tmp_path, n, "/bin/true")
        lost = backend.stats().lost.get(node.cid, 0)
        counted = backend.syscall_counts()[node.cid][GETPPID]
        assert lost > 0 and counted < n <= counted + lost, (counted, lost)
        assert node.getppid(TRACE) == counted

        status = _status(node.state)
        assert status.targets[0].events_lost == lost
        [row] = status.sources
        assert row.results.events_lost == lost

        # The operator reads that report: the trace and its profile say they are incomplete.
        report = node_report({"metadata": {"name": "n1", "generation": 1},
                              "spec": {"sources": [{"id": TRACE, "generation": 1}]},
                              "status": status.to_wire()})
        ledger = Ledger()
        ledger.observe("n1", report)
        spec = ContainerTraceSpec.model_validate(
            {"selector": {}, "seccompProfile": {"defaultAction": "SCMP_ACT_ERRNO"}})
        out = trace_status(
            TraceInput("t", "ns", 1, WALL, spec, (), None), source_id=TRACE,
            targets=[("n1", {"podUid": "u1", "container": "app", "pod": "p1"})],
            reports={"n1": report}, tally=ledger.total(TRACE), arches=["amd64"], now=WALL,
            pending_timeout=timedelta(minutes=5), top_n=20,
        ).status
        profile = get_condition(out.conditions, "ProfileComplete")
        assert (profile.status, profile.reason) == ("False", "EventsLost")
        assert f"lost {lost} events" in profile.message and "too strict" in profile.message
        assert get_condition(out.conditions, "Complete").status == "False"
        assert out.targets[0].events_lost == lost and out.events_lost == lost
    finally:
        node.select()
        backend.close()


def _status(state: NodeState) -> NodeTracerStatus:
    report = DiscoveryReport(
        kernel=KernelReport("6.18", True, "/sys/kernel/tracing"),
        cgroup=CgroupReport(CgroupVersion.HYBRID, root="/sys/fs/cgroup/unified",
                            kubepods_path="kubepods", kubepods_id=1, kubepods_level=1),
        bcc=BccCheck(True, "ok"),
        backend=BackendReport(BackendName.BCC, "test"),
    )
    health = Health(True, RuntimeStatus(name="containerd", endpoint="unix:///x"), "ok")
    return node_status(report=report, health=health, stats=BackendStats(0, 0), state=state,
                       previous=[], now=WALL, agent_version="t")
