"""The agent's node state: grace for new containers, buffered events, untrace,
syscall-rule deltas, and the NodeTracer status built from it."""

from __future__ import annotations

from datetime import UTC, datetime

from podtrace_agent.backend import BackendStats, ExecEvent, MapStat
from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView
from podtrace_agent.cluster.state import GRACE_S, KnownCgroup, NodeState
from podtrace_agent.cluster.status import Health, node_status
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
)
from podtrace_api.conditions import get_condition
from podtrace_api.containertrace import TargetState
from podtrace_api.nodetracer import BackendName, CgroupVersion, NodeTracerSpec, RuntimeStatus
from podtrace_api.syscalls import number_of

WALL = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = NodeTracerSpec.model_validate({
    "sources": [{"id": "TracingPolicy/shells", "kind": "TracingPolicy", "name": "shells",
                 "rules": [{"name": "sh", "reason": "Shell", "execFilenames": ["/bin/sh"]},
                           {"name": "pt", "reason": "Ptrace", "syscalls": ["ptrace"]}]}],
    "targets": [{"podUid": "u1", "container": "app", "namespace": "ns", "pod": "p1",
                 "sources": ["TracingPolicy/shells"]}],
})


def _exec(cgroup: int, filename: str) -> ExecEvent:
    return ExecEvent(cgroup, 10, 1, 0, "sh", filename, 0)


def _known(cgroup: int, cid: str, pod: str, name: str, t: float = 0.0) -> KnownCgroup:
    return KnownCgroup(CgroupRef(cgroup, f"kubepods/besteffort/pod{pod}/{cid}"), cid, pod,
                       name, first_seen=t)


def test_events_before_the_spec_names_the_container_are_replayed() -> None:
    state = NodeState()
    state.add_cgroup(_known(7, "c1", "u1", "app"))
    assert state.on_event(_exec(7, "/bin/sh"), WALL) is None  # no spec yet: buffered
    changes, replayed = state.replan(1.0, WALL)
    assert replayed == [] and changes.untrace == set()  # no spec yet: keep tracing
    state.set_spec(SPEC, 3)
    changes, replayed = state.replan(2.0, WALL)
    assert list(changes.trace) == [7]
    assert [o.event.filename for o in replayed] == ["/bin/sh"]
    assert [m.ref.rule for m in replayed[0].matches] == ["sh"]
    state.applied(changes)
    assert state.replan(3.0, WALL)[0].trace == {}  # nothing new to program


def test_unclaimed_containers_are_untraced_after_the_grace() -> None:
    state = NodeState()
    state.set_spec(SPEC, 1)
    state.add_cgroup(_known(8, "c2", "u2", "other", t=0.0))
    state.on_event(_exec(8, "/bin/true"), WALL)
    assert state.replan(1.0, WALL)[0].untrace == set()
    changes, _ = state.replan(GRACE_S + 1, WALL)
    assert changes.untrace == {8}
    state.applied(changes)
    assert state.replan(GRACE_S + 2, WALL)[0].untrace == set()  # not repeated


def test_syscall_rules_fire_on_new_calls_only() -> None:
    state = NodeState()
    state.set_spec(SPEC, 1)
    state.add_cgroup(_known(7, "c1", "u1", "app"))
    state.applied(state.replan(0.0, WALL)[0])
    ptrace = number_of("ptrace")
    assert [(m.ref.rule, m.count) for _, m in state.on_counts({7: {ptrace: 2, 0: 5}})] == [
        ("pt", 2)]
    assert state.on_counts({7: {ptrace: 2, 0: 9}}) == []
    assert state.observed("TracingPolicy/shells").syscalls[0] == 9


def _report() -> DiscoveryReport:
    return DiscoveryReport(
        kernel=KernelReport("6.18", True, "/sys/kernel/tracing"),
        cgroup=CgroupReport(CgroupVersion.HYBRID, root="/sys/fs/cgroup/unified",
                            kubepods_path="kubepods", kubepods_id=42, kubepods_level=1),
        bcc=BccCheck(True, "ok"),
        backend=BackendReport(BackendName.BCC, "bcc compiles here"),
    )


def test_status_reports_targets_results_and_readiness() -> None:
    state = NodeState()
    state.set_spec(SPEC, 4)
    state.set_pod(PodView("u1", "ns", "p1", {"app": PodContainer("c1", "busybox", True)}))
    state.add_cgroup(_known(7, "c1", "u1", "app"))
    state.applied(state.replan(0.0, WALL)[0])
    state.on_event(_exec(7, "/bin/sh"), WALL)
    health = Health(True, RuntimeStatus(name="containerd", endpoint="unix:///x"), "ok")
    stats = BackendStats(100, 2, [MapStat("traced", 1, 1024)])
    status = node_status(report=_report(), health=health, stats=stats, state=state,
                         previous=[], now=WALL, agent_version="t")
    assert status.observed_generation == 4 and status.traced_containers == 1
    assert get_condition(status.conditions, "Ready").status == "True"
    [target] = status.targets
    assert (target.state, target.cgroup_id, target.container_id) == (TargetState.TRACING, 7, "c1")
    [row] = status.sources
    assert (row.source, row.targets, row.applied) == ("TracingPolicy/shells", 1, 1)
    assert row.results.execs_total == 1 and [m.rule for m in row.results.rule_matches] == ["sh"]
    assert row.results.since == WALL
    assert status.events_dropped == 2 and status.maps[0].capacity == 1024
    wire = status.to_wire()
    assert wire["cgroup"]["kubepodsId"] == 42 and wire["backend"]["name"] == "bcc"


def test_status_without_spec_is_not_ready() -> None:
    health = Health(True, RuntimeStatus(), "no runtime socket found")
    status = node_status(report=_report(), health=health, stats=BackendStats(0, 0),
                         state=NodeState(), previous=[], now=WALL, agent_version="t")
    ready = get_condition(status.conditions, "Ready")
    assert ready.status == "False" and ready.reason == "WaitingForSpec"
    assert get_condition(status.conditions, "RuntimeConnected").reason == "NoCRIRuntime"


def test_the_runtime_reexec_before_the_entrypoint_is_not_the_workload() -> None:
    state = NodeState()
    state.set_spec(SPEC, 1)
    state.add_cgroup(_known(7, "c1", "u1", "app"))
    state.applied(state.replan(0.0, WALL)[0])
    for filename in ["/proc/self/exe", "/proc/self/exe", "/bin/app", "/proc/self/exe"]:
        state.on_event(_exec(7, filename), WALL)
    execs = state.observed("TracingPolicy/shells").execs
    assert execs == {"/bin/app": 1, "/proc/self/exe": 1}  # a later re-exec is the workload's
