"""No valid source stops the agent: a source the kernel side cannot take, or one
that does not fit a full table, is reported not applied (with the reason) and
every other source on the node keeps tracing. Issue 10, parts 1 and 2."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from test_agent_state import _report

from podtrace_agent.backend import BackendError, BackendStats, CapacityError, SourceLimits
from podtrace_agent.bpf.tables import SharedValues
from podtrace_agent.cluster.apply import apply_request, remove
from podtrace_agent.cluster.metrics import AgentMetrics
from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView
from podtrace_agent.cluster.state import KnownCgroup, NodeState
from podtrace_agent.cluster.status import Health, node_status, source_statuses
from podtrace_api.conditions import get_condition
from podtrace_api.containertrace import TargetState
from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodeconfig import Probe
from podtrace_api.nodetracer import NodeTracerSpec, RuntimeStatus

WALL = datetime(2026, 1, 1, tzinfo=UTC)
LONG = "/" + "é" * 40  # 41 characters (admission takes up to 64), 81 bytes
BCC_LIMITS = SourceLimits(open_prefix_bytes=64, open_prefixes=8, connect_ports=16,
                          exec_filename_bytes=255)


@dataclass
class FakeBackend:
    """The Backend's tracing half with the bcc backend's rules: prefixes longer than
    64 bytes raise BackendError, a full prefix table or traced map CapacityError."""

    limits: SourceLimits = BCC_LIMITS
    max_traced: int = 8
    prefix_entries: int = 8
    traced: dict[int, tuple[Probe, tuple[str, ...], int]] = field(default_factory=dict)
    calls: int = 0

    def __post_init__(self) -> None:
        self.prefixes = SharedValues[str](self.prefix_entries)

    def trace(self, cgroup_id: int, path: str, mask: Probe, open_prefixes: tuple[str, ...] = (),
              connect_ports: tuple[int, ...] = ()) -> None:
        self.calls += 1
        if too_long := [p for p in open_prefixes if len(p.encode()) > 64]:
            raise BackendError(f"open prefixes longer than 64 bytes: {too_long}")
        if cgroup_id not in self.traced and len(self.traced) >= self.max_traced:
            raise CapacityError(f"all {self.max_traced} counter rows are in use")
        bits, _ = self.prefixes.acquire(open_prefixes)
        if cgroup_id in self.traced:
            self.prefixes.release(self.traced[cgroup_id][2])
        self.traced[cgroup_id] = (mask, open_prefixes, bits)

    def untrace(self, cgroup_id: int) -> None:
        entry = self.traced.pop(cgroup_id, None)
        if entry is not None:
            self.prefixes.release(entry[2])


def _source(name: str, **observe: object) -> dict:
    return {"id": f"TracingPolicy/{name}", "kind": "TracingPolicy", "name": name,
            "observe": {"syscalls": {"mode": "All"}, **observe}}


def _spec(sources: list[dict], targets: dict[str, list[str]]) -> NodeTracerSpec:
    return NodeTracerSpec.model_validate({
        "sources": sources,
        "targets": [{"podUid": uid, "container": "app", "namespace": "ns", "pod": f"p-{uid}",
                     "sources": [f"TracingPolicy/{n}" for n in names]}
                    for uid, names in targets.items()],
    })


def _node(spec: NodeTracerSpec, limits: SourceLimits = BCC_LIMITS) -> NodeState:
    state = NodeState(limits=limits)
    state.set_spec(spec, 1)
    for n, target in enumerate(spec.targets, start=1):
        cid = f"c{n}"
        state.set_pod(PodView(target.pod_uid, "ns", target.pod,
                              {"app": PodContainer(cid, "busybox", running=True)}))
        state.add_cgroup(KnownCgroup(
            CgroupRef(100 + n, f"kubepods/besteffort/pod{target.pod_uid}/{cid}"), cid,
            target.pod_uid, "app"))
    return state


def _tick(state: NodeState, backend: FakeBackend) -> None:
    """What the agent loop does each tick (agent.Agent._apply_plan)."""
    changes, _ = state.replan(0.0, WALL)
    outcomes = {cid: apply_request(backend, cid, request, state.sources)
                for cid, request in changes.trace.items()}
    changes.untrace = {c for c in changes.untrace if remove(backend, c)}
    state.applied(changes, outcomes)


def test_the_backend_refuses_a_long_prefix_without_the_planner() -> None:
    """The crash of issue 10: BackendError from one source's prefix left the loop."""
    backend = FakeBackend()
    with pytest.raises(BackendError):
        backend.trace(1, "kubepods/x/y", Probe.OPEN, (LONG,))


@pytest.mark.parametrize("limits", [BCC_LIMITS, SourceLimits()], ids=["planned", "unplanned"])
def test_a_source_the_kernel_cannot_take_is_not_applied_and_the_others_trace(
    limits: SourceLimits,
) -> None:
    # "unplanned": a backend whose limits the planner does not know raises at apply time.
    spec = _spec([_source("bad", fileOpens={"pathPrefixes": [LONG]}), _source("good")],
                 {"u1": ["bad", "good"], "u2": ["bad"], "u3": ["good"]})
    state, backend = _node(spec, limits), FakeBackend()
    _tick(state, backend)

    assert sorted(backend.traced) == [101, 103]
    assert backend.traced[101][1] == ()  # the good source's request, without the prefix
    both, bad_only, good_only = (state.target_view((u, "app")) for u in ("u1", "u2", "u3"))
    reason = (NotAppliedReason.LIMIT_EXCEEDED if limits.open_prefix_bytes
              else NotAppliedReason.APPLY_FAILED)
    assert both.state is TargetState.TRACING
    assert {s: r.reason for s, r in both.not_applied.items()} == {"TracingPolicy/bad": reason}
    assert (bad_only.state, bad_only.reason) == (TargetState.PENDING, reason.value)
    assert "bytes" in bad_only.message
    assert (good_only.state, good_only.not_applied) == (TargetState.TRACING, {})
    rows = {r.source: r for r in source_statuses(state)}
    assert (rows["TracingPolicy/bad"].applied, rows["TracingPolicy/bad"].not_applied) == (0, 2)
    assert rows["TracingPolicy/bad"].reason == reason
    assert (rows["TracingPolicy/good"].applied, rows["TracingPolicy/good"].not_applied) == (2, 0)


def test_a_full_prefix_table_refuses_the_source_that_does_not_fit_and_retries() -> None:
    spec = _spec([_source("a", fileOpens={"pathPrefixes": ["/etc/", "/var/"]}),
                  _source("b", fileOpens={"pathPrefixes": ["/tmp/"]})],
                 {"u1": ["a", "b"]})
    state, backend = _node(spec), FakeBackend(prefix_entries=2)
    _tick(state, backend)

    view = state.target_view(("u1", "app"))
    assert view.state is TargetState.TRACING  # a traces it
    assert view.not_applied["TracingPolicy/b"].reason is NotAppliedReason.CAPACITY_EXCEEDED
    assert state.applied_sources(("u1", "app")) == {"TracingPolicy/a"}
    # The table grows (another cgroup let go of its prefixes): the next tick applies b.
    backend.prefixes = SharedValues[str](3)
    backend.traced.clear()
    _tick(state, backend)
    assert state.target_view(("u1", "app")).not_applied == {}
    assert backend.traced[101][1] == ("/etc/", "/tmp/", "/var/")


def test_a_full_traced_map_leaves_the_target_pending_for_capacity() -> None:
    spec = _spec([_source("a")], {"u1": ["a"], "u2": ["a"]})
    state, backend = _node(spec), FakeBackend(max_traced=1)
    _tick(state, backend)

    first, second = state.target_view(("u1", "app")), state.target_view(("u2", "app"))
    assert first.state is TargetState.TRACING
    assert (second.state, second.reason) == (TargetState.PENDING, "CapacityExceeded")
    assert "counter rows" in second.message
    metrics = AgentMetrics("n1")
    status = node_status(report=_report(), health=Health(True, RuntimeStatus(), ""),
                         stats=BackendStats(0, 0), state=state, previous=[], now=WALL,
                         agent_version="t")
    assert status.capacity_exceeded == 1 and status.traced_containers == 1
    applied = get_condition(status.conditions, "SourcesApplied")
    assert (applied.status, applied.reason) == ("False", "CapacityExceeded")
    metrics.set_not_applied(status.targets)
    value = metrics.registry.get_sample_value(
        "podtrace_targets_not_applied", {"node": "n1", "reason": "CapacityExceeded"})
    assert value == 1


def test_an_exception_of_any_kind_stays_in_its_source() -> None:
    class Exploding(FakeBackend):
        def trace(self, cgroup_id: int, path: str, mask: Probe,
                  open_prefixes: tuple[str, ...] = (), connect_ports: tuple[int, ...] = ()) -> None:
            if "/boom/" in open_prefixes:
                raise KeyError("boom")
            super().trace(cgroup_id, path, mask, open_prefixes, connect_ports)

        def untrace(self, cgroup_id: int) -> None:
            raise OSError("untrace failed")

    spec = _spec([_source("boom", fileOpens={"pathPrefixes": ["/boom/"]}), _source("ok")],
                 {"u1": ["boom", "ok"], "u2": ["boom"]})
    state, backend = _node(spec), Exploding()
    _tick(state, backend)  # does not raise
    assert state.target_view(("u1", "app")).state is TargetState.TRACING
    pending = state.target_view(("u2", "app"))
    assert (pending.state, pending.reason) == (TargetState.PENDING, "ApplyFailed")
    assert "KeyError" in pending.message
