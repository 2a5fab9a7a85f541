"""Each source's results on a node, from when it began tracing each container: a
trace started while a policy traces the container counts only what came after, a
container that leaves a source's targets and comes back is not counted twice,
a container just created is counted from its first syscall, what a source
counted stays reported a while after it left the spec, lost events mark it."""

from __future__ import annotations

from datetime import UTC, datetime

from podtrace_agent.backend import BackendStats, ExecEvent
from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView
from podtrace_agent.cluster.state import RETAIN_S, KnownCgroup, NodeState
from podtrace_agent.cluster.status import Health, node_status
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
)
from podtrace_api.budget import MAX_NOT_APPLIED_ROWS
from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodetracer import (
    BackendName,
    CgroupVersion,
    NodeTracerSpec,
    NodeTracerStatus,
    RuntimeStatus,
    TraceSource,
)
from podtrace_api.syscalls import number_of

WALL = datetime(2026, 1, 1, tzinfo=UTC)
GETPPID = number_of("getppid")
POLICY, TRACE = "TracingPolicy/p", "ContainerTrace/ns/t"
SOURCES = {
    POLICY: {"id": POLICY, "kind": "TracingPolicy", "name": "p"},
    TRACE: {"id": TRACE, "kind": "ContainerTrace", "name": "t", "namespace": "ns"},
}


def _spec(*sources: str, targets: int = 1) -> NodeTracerSpec:
    return NodeTracerSpec.model_validate({
        "sources": [SOURCES[s] for s in sources],
        "targets": [{"podUid": f"u{i}", "container": "app", "namespace": "ns", "pod": f"p{i}",
                     "sources": list(sources)} for i in range(1, targets + 1)] if sources else [],
    })


def _node(*sources: str) -> NodeState:
    state = NodeState()
    state.set_spec(_spec(*sources), 1)
    state.set_pod(PodView("u1", "ns", "p1", {"app": PodContainer("c1", "img", True)}))
    state.add_cgroup(KnownCgroup(CgroupRef(7, "kubepods/besteffort/podu1/c1"), "c1", "u1", "app"))
    return state


def _tick(state: NodeState, now: float, getppid: int | None = None) -> None:
    """One turn of the loop: plan, apply, and (as the agent does when a window waits for
    its baseline) read the counts right after: `getppid` calls so far."""
    changes, _ = state.replan(now, WALL)
    state.applied(changes)
    if state.needs_counts():
        assert getppid is not None, "a window waits for its baseline"
        state.on_counts({7: {GETPPID: getppid}})


def _getppid(state: NodeState, source: str) -> int:
    return state.observed(source).syscalls.get(GETPPID, 0)


def test_a_trace_started_later_counts_only_what_came_after() -> None:
    state = _node(POLICY)
    _tick(state, 0.0)
    state.on_counts({7: {GETPPID: 1000}})
    state.on_event(ExecEvent(7, 1, 0, 0, "a", "/bin/a", 0), WALL)
    state.set_spec(_spec(POLICY, TRACE), 2)
    _tick(state, 1.0, 1000)  # applied now: its baseline is 1000
    state.on_counts({7: {GETPPID: 1250}})
    state.on_event(ExecEvent(7, 1, 0, 0, "b", "/bin/b", 0), WALL)
    assert (_getppid(state, POLICY), _getppid(state, TRACE)) == (1250, 250)
    assert state.observed(TRACE).execs == {"/bin/b": 1}
    assert state.observed(POLICY).execs == {"/bin/a": 1, "/bin/b": 1}


def test_a_target_that_leaves_and_comes_back_is_not_counted_twice() -> None:
    state = _node(POLICY, TRACE)
    _tick(state, 0.0)
    state.on_counts({7: {GETPPID: 100}})
    state.set_spec(_spec(POLICY), 2)  # the trace no longer selects the container
    _tick(state, 1.0)
    state.on_counts({7: {GETPPID: 150}})  # the policy keeps tracing it
    state.set_spec(_spec(POLICY, TRACE), 3)  # selected again
    _tick(state, 2.0, 150)
    state.on_counts({7: {GETPPID: 170}})
    assert _getppid(state, TRACE) == 100 + 20
    assert _getppid(state, POLICY) == 170


def test_a_container_untraced_and_traced_again_counts_from_zero_once() -> None:
    state = _node(TRACE)
    _tick(state, 0.0)
    state.on_counts({7: {GETPPID: 100}})
    state.set_spec(_spec(), 2)  # nobody selects it: untraced, the backend drops its counts
    changes, _ = state.replan(1.0, WALL)
    assert changes.untrace == {7}
    state.applied(changes)
    state.set_spec(_spec(TRACE), 3)
    _tick(state, 2.0)
    state.on_counts({7: {GETPPID: 30}})  # the backend counts it from zero again
    assert _getppid(state, TRACE) == 130


def test_a_new_container_is_counted_from_its_first_syscall() -> None:
    state = _node(TRACE)  # the spec names it: claimed at the first plan
    changes, _ = state.replan(0.0, WALL)
    state.applied(changes)
    assert not state.needs_counts()  # its baseline is the start of its cgroup
    state.on_counts({7: {GETPPID: 42}})  # counted since mkdir, before it was claimed
    assert _getppid(state, TRACE) == 42


def test_results_stay_a_while_after_the_source_left_the_spec() -> None:
    state = _node(TRACE)
    _tick(state, 0.0)
    state.on_counts({7: {GETPPID: 5}})
    state.set_spec(_spec(), 2)
    _tick(state, 10.0)
    rows = _status(state).sources
    assert [(r.source, r.targets, r.results.syscalls_total) for r in rows] == [(TRACE, 0, 5)]
    _tick(state, 10.0 + RETAIN_S + 1)
    assert _status(state).sources == []


def test_lost_events_mark_the_container_and_the_sources_that_traced_it() -> None:
    state = _node(POLICY)
    _tick(state, 0.0)
    state.on_counts({7: {GETPPID: 10}}, lost={7: 3})
    state.set_spec(_spec(POLICY, TRACE), 2)
    _tick(state, 1.0, 10)
    state.on_counts({7: {GETPPID: 20}}, lost={7: 7})
    status = _status(state)
    assert status.targets[0].events_lost == 7
    rows = {r.source: r.results for r in status.sources}
    assert (rows[POLICY].events_lost, rows[TRACE].events_lost) == (7, 4)


def test_sources_not_applied_are_listed_up_to_the_bound_and_counted_beyond() -> None:
    n = MAX_NOT_APPLIED_ROWS + 6
    state = NodeState()
    wide = TraceSource.model_validate({
        "id": "TracingPolicy/wide", "kind": "TracingPolicy", "name": "wide",
        "observe": {"fileOpens": {"pathPrefixes": ["/" + "\u00e9" * 50]}}})
    spec = _spec(POLICY, targets=n)
    spec.sources.append(wide)
    for target in spec.targets:
        target.sources.append(wide.id)
    state.set_spec(spec, 1)
    for i in range(1, n + 1):
        state.set_pod(PodView(f"u{i}", "ns", f"p{i}", {"app": PodContainer(f"c{i}", "", True)}))
        state.add_cgroup(KnownCgroup(CgroupRef(100 + i, f"kubepods/podu{i}/c{i}"), f"c{i}",
                                     f"u{i}", "app"))
    state.limits = state.limits.__class__(open_prefix_bytes=64)
    _tick(state, 0.0)
    status = _status(state)
    assert len(status.not_applied) == MAX_NOT_APPLIED_ROWS and status.not_applied_omitted == 6
    assert {r.reason for r in status.not_applied} == {NotAppliedReason.LIMIT_EXCEEDED}
    assert all(t.not_applied == [NotAppliedReason.LIMIT_EXCEEDED] for t in status.targets)
    wide_row = next(r for r in status.sources if r.source == wide.id)
    assert (wide_row.targets, wide_row.not_applied) == (n, n)
    assert wide_row.message.isascii() and "%C3%A9" in wide_row.message  # plain text


def _status(state: NodeState) -> NodeTracerStatus:
    report = DiscoveryReport(
        kernel=KernelReport("6.18", True, "/sys/kernel/tracing"),
        cgroup=CgroupReport(CgroupVersion.HYBRID, root="/sys/fs/cgroup/unified",
                            kubepods_path="kubepods", kubepods_id=42, kubepods_level=1),
        bcc=BccCheck(True, "ok"),
        backend=BackendReport(BackendName.BCC, "bcc compiles here"),
    )
    health = Health(True, RuntimeStatus(name="containerd", endpoint="unix:///x"), "ok")
    return node_status(report=report, health=health, stats=BackendStats(0, 0), state=state,
                       previous=[], now=WALL, agent_version="t")
