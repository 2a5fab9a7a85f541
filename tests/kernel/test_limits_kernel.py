"""Issue 10 on the real kernel, through the bcc backend: every CRD bound of the
kernel side is traced at the bound (tests/limits_table.py), and a source the
kernel cannot take (a prefix admission accepts, but of more than 64 bytes)
stops only itself: the other source of the same container keeps counting."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kernel_support import Collector, Hierarchy, cgroup_id, have, run_helper
from limits_table import BOUNDS, Bound

from podtrace_agent.backend import Backend, OpenEvent, SourceLimits
from podtrace_agent.cluster.apply import apply_request, remove
from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView
from podtrace_agent.cluster.state import KnownCgroup, NodeState
from podtrace_api.containertrace import TargetState
from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodetracer import NodeTracerSpec, TraceSource
from podtrace_api.observe import ObserveSpec
from podtrace_api.syscalls import number_of
from podtrace_operator.sources import parse_policy, parse_trace

WALL = datetime(2026, 1, 1, tzinfo=UTC)
CALLS = 5000
GETPPID = number_of("getppid")


def _admitted(bound: Bound) -> TraceSource:
    """The source the operator compiles from the object at the bound."""
    meta = {"name": bound.name, "uid": str(uuid.uuid4()), "generation": 1}
    if bound.kind == "ct":
        parsed = parse_trace({"kind": "ContainerTrace", "metadata": meta | {"namespace": "ns"},
                              "spec": bound.at})
    else:
        parsed = parse_policy({"kind": "TracingPolicy", "metadata": meta, "spec": bound.at})
    assert parsed.problems == () and parsed.source is not None, parsed.problems
    return TraceSource.model_validate(parsed.source.wire)


def _node(sources: list[TraceSource], hierarchy: Hierarchy, container: Path,
          limits: SourceLimits) -> NodeState:
    """A node whose one target (this container) every source selects."""
    name = container.name
    state = NodeState(limits=limits)
    state.set_spec(NodeTracerSpec(sources=sources, targets=[{
        "podUid": "u1", "container": "app", "namespace": "ns", "pod": "p",
        "sources": sorted(s.id for s in sources)}]), 1)
    state.set_pod(PodView("u1", "ns", "p", {"app": PodContainer(name, "img", running=True)}))
    state.add_cgroup(KnownCgroup(CgroupRef(cgroup_id(container), hierarchy.rel(container)),
                                 name, "u1", "app"))
    return state


def _tick(state: NodeState, backend: Backend) -> None:
    changes, _ = state.replan(0.0, WALL)
    outcomes = {c: apply_request(backend, c, r, state.sources) for c, r in changes.trace.items()}
    changes.untrace = {c for c in changes.untrace if remove(backend, c)}
    state.applied(changes, outcomes)


def _counted(backend: Backend, cid: int, calls: int) -> int:
    deadline = time.monotonic() + 10
    while True:
        seen = backend.syscall_counts().get(cid, {}).get(GETPPID, 0)
        if seen >= calls or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


@pytest.mark.parametrize("bound", BOUNDS, ids=[b.name for b in BOUNDS])
def test_at_the_bound_the_source_is_traced(
    bcc_collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path, bound: Bound
) -> None:
    backend = bcc_collector.backend
    container = hierarchy.container()
    cid = cgroup_id(container)
    state = _node([_admitted(bound)], hierarchy, container, backend.limits)
    try:
        _tick(state, backend)

        view = state.target_view(("u1", "app"))
        assert (view.state, view.not_applied) == (TargetState.TRACING, {}), view.message
        run = run_helper(helper, container, CALLS, wait_for_go=False, tmp_path=tmp_path)
        assert run.wait() == 0
        assert _counted(backend, cid, CALLS) >= CALLS
    finally:  # the backend is the session's: leave its tables as they were
        backend.untrace(cid)


def test_an_open_under_a_prefix_of_64_bytes_is_reported(
    bcc_collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    python = have("python3")
    [bound] = [b for b in BOUNDS if b.name == "tp-prefix-bytes"]
    source = _admitted(bound)
    [prefix] = source.observe.file_opens.path_prefixes  # type: ignore[union-attr]
    container = hierarchy.container()
    cid = cgroup_id(container)
    state = _node([source], hierarchy, container, bcc_collector.backend.limits)
    try:
        _tick(state, bcc_collector.backend)
        code = f"try: open({prefix + 'x'!r})\nexcept OSError: pass"
        run = run_helper(helper, container, 0, (python, "-S", "-c", code), wait_for_go=False,
                         tmp_path=tmp_path)
        assert run.wait() == 0
        event = bcc_collector.wait_for(lambda e: isinstance(e, OpenEvent) and e.cgroup_id == cid)
        assert event.path == prefix + "x" and len(prefix.encode()) == 64
    finally:
        bcc_collector.backend.untrace(cid)


@pytest.mark.parametrize("planned", [True, False], ids=["planned", "refused-by-the-backend"])
def test_a_prefix_too_long_for_the_kernel_stops_only_its_own_source(
    bcc_collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path, planned: bool
) -> None:
    """The crash of issue 10: admitted (51 characters), 101 bytes, and before the fix
    `podtrace-agent run` died of BackendError and every policy on the node stopped."""
    backend = bcc_collector.backend
    wide = "/" + "é" * 50
    bad = TraceSource(id="TracingPolicy/wide", kind="TracingPolicy", name="wide",
                      observe=ObserveSpec.model_validate({"fileOpens": {"pathPrefixes": [wide]}}))
    good = TraceSource(id="TracingPolicy/plain", kind="TracingPolicy", name="plain")
    container = hierarchy.container()
    cid = cgroup_id(container)
    # planned: the planner knows the backend's limits; else the backend itself refuses.
    state = _node([bad, good], hierarchy, container, backend.limits if planned else SourceLimits())
    _tick(state, backend)

    view = state.target_view(("u1", "app"))
    assert view.state is TargetState.TRACING
    reason = NotAppliedReason.LIMIT_EXCEEDED if planned else NotAppliedReason.APPLY_FAILED
    assert {s: r.reason for s, r in view.not_applied.items()} == {"TracingPolicy/wide": reason}
    assert "64" in view.not_applied["TracingPolicy/wide"].message
    assert state.applied_sources(("u1", "app")) == {"TracingPolicy/plain"}
    run = run_helper(helper, container, CALLS, wait_for_go=False, tmp_path=tmp_path)
    assert run.wait() == 0
    assert _counted(backend, cid, CALLS) >= CALLS  # the other source still counts
    backend.untrace(cid)
