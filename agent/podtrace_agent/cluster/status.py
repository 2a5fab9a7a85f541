"""NodeTracer status from the agent's state: the discovery report, the backend's
numbers, every target, and each source's results. Pure.

Whatever the node holds, the status stays within its CRD's bounds, and so
within `podtrace_api.budget.STATUS_BUDGET_BYTES`: targets and sources are as
many as the spec may hold, sources not applied are listed for the first
MAX_NOT_APPLIED_ROWS and counted beyond, results are cut in `results.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from podtrace_api.base import Condition
from podtrace_api.budget import MAX_NODE_PROFILES, MAX_NODE_SOURCES, MAX_NOT_APPLIED_ROWS
from podtrace_api.conditions import set_condition
from podtrace_api.containertrace import TargetState
from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodetracer import (
    BackendName,
    IdentitySource,
    MapUsage,
    NodeTargetStatus,
    NodeTracerStatus,
    NotApplied,
    RuntimeStatus,
    SeccompInstallStatus,
    SourceApplyStatus,
    TargetProfile,
)
from podtrace_api.syscallset import encode

from ..backend import BackendStats
from ..discovery import DiscoveryReport
from .results import source_result
from .state import NodeState


@dataclass(frozen=True)
class Health:
    """The parts of readiness the loop knows: the backend runs, the runtime answers."""

    backend_running: bool
    runtime: RuntimeStatus
    runtime_message: str
    runtime_reachable: bool = True  # the runtime found answered its last Version call


def _conditions(
    previous: Sequence[Condition], report: DiscoveryReport, health: Health, state: NodeState,
    now: datetime,
) -> list[Condition]:
    gen = state.generation
    cgroup_ok = report.cgroup.kubepods_id is not None
    conds = set_condition(
        previous, "CgroupsDiscovered", cgroup_ok,
        "KubepodsFound" if cgroup_ok else "NoKubepods",
        report.cgroup.message or f"kubepods at {report.cgroup.kubepods_path} "
        f"(id {report.cgroup.kubepods_id}) in {report.cgroup.root}", now,
    )
    runtime_ok = bool(health.runtime.endpoint) and health.runtime_reachable
    runtime_reason = "CRIAvailable" if runtime_ok else \
        "RuntimeUnreachable" if health.runtime.endpoint else "NoCRIRuntime"
    conds = set_condition(
        conds, "RuntimeConnected", runtime_ok, runtime_reason, health.runtime_message, now,
    )
    backend_ok = health.backend_running and report.backend.name is not BackendName.NONE
    conds = set_condition(
        conds, "BackendLoaded", backend_ok,
        f"Backend{report.backend.name.value.capitalize()}" if backend_ok else "NoBackend",
        report.backend.reason, now,
    )
    ready = backend_ok and cgroup_ok and state.spec_seen
    if ready:
        reason, message = "Tracing", f"spec generation {gen} applied"
    elif not backend_ok:
        reason, message = "NoBackend", report.backend.reason
    elif not cgroup_ok:
        reason, message = "NoKubepods", report.cgroup.message
    else:
        reason, message = "WaitingForSpec", "the NodeTracer spec has not been read yet"
    return set_condition(conds, "Ready", ready, reason, message, now, gen)


def _sources_applied(
    conditions: Sequence[Condition], sources: Sequence[SourceApplyStatus], now: datetime,
    generation: int,
) -> list[Condition]:
    """SourcesApplied: False while some source is not applied to some container."""
    short = [s for s in sources if s.not_applied]
    if not short:
        return set_condition(conditions, "SourcesApplied", True, "Applied",
                             "every source is applied to every container it selects", now,
                             generation)
    capacity = [s for s in short if s.reason == NotAppliedReason.CAPACITY_EXCEEDED]
    reason = (capacity or short)[0].reason or NotAppliedReason.APPLY_FAILED
    message = "; ".join(f"{s.source}: not applied to {s.not_applied} of {s.targets} "
                        f"containers ({s.reason}: {s.message})" for s in short)
    return set_condition(conditions, "SourcesApplied", False, reason, message, now, generation)


def source_statuses(state: NodeState) -> list[SourceApplyStatus]:
    """How each source of the spec is applied on this node, from the targets' views,
    with what it observed; then sources that left the spec while their results are
    kept (as many as the list holds)."""
    counts: dict[str, list[int]] = {sid: [0, 0, 0] for sid in sorted(state.sources)}
    why: dict[str, tuple[NotAppliedReason, str]] = {}
    for key in sorted(state.plan.targets):
        target = state.plan.targets[key].target
        view = state.target_view(key)
        for sid in target.sources:
            row = counts.get(sid)
            if row is None:
                continue
            row[0] += 1
            rejection = view.not_applied.get(sid)
            if rejection is not None:
                row[2] += 1
                why.setdefault(sid, (rejection.reason, f"{target.namespace}/{target.pod} "
                                                       f"{target.container}: {rejection.message}"))
            elif view.state is TargetState.TRACING:
                row[1] += 1
    for sid in sorted(state.totals.keys() - counts.keys()):
        if len(counts) >= MAX_NODE_SOURCES:
            break
        counts[sid] = [0, 0, 0]
    rows = []
    for sid, (targets, applied, not_applied) in counts.items():
        totals = state.totals.get(sid)
        reason, message = why.get(sid, (None, ""))
        rows.append(SourceApplyStatus(
            source=sid, targets=targets, applied=applied, not_applied=not_applied,
            reason=reason, message=message,
            results=source_result(totals.source, totals.since, state.observed(sid),
                                  state.name_of) if totals is not None else None,
        ))
    return rows


def not_applied_rows(state: NodeState) -> tuple[list[NotApplied], int]:
    """The sources not applied to a container, by pod UID, container and source: the
    first MAX_NOT_APPLIED_ROWS, and how many more."""
    rows = [
        NotApplied(pod_uid=key[0], container=key[1], source=sid, reason=r.reason,
                   message=r.message)
        for key in sorted(state.plan.targets)
        for sid, r in state.target_view(key).not_applied.items()
    ]
    return rows[:MAX_NOT_APPLIED_ROWS], max(0, len(rows) - MAX_NOT_APPLIED_ROWS)


def node_status(
    *,
    report: DiscoveryReport,
    health: Health,
    stats: BackendStats,
    state: NodeState,
    previous: Sequence[Condition],
    now: datetime,
    agent_version: str,
    installs: SeccompInstallStatus | None = None,
) -> NodeTracerStatus:
    """The whole status the agent reports for its node."""
    targets = []
    for key in sorted(state.plan.targets):
        planned = state.plan.targets[key]
        known = state.cgroups.get(planned.cgroup_id) if planned.cgroup_id is not None else None
        identity = None
        if planned.container_id:
            identity = IdentitySource.CRI if known and known.container_name \
                else IdentitySource.KUBERNETES
        view = state.target_view(key)
        targets.append(NodeTargetStatus(
            pod_uid=key[0],
            container=key[1],
            container_id=planned.container_id,
            cgroup_id=planned.cgroup_id,
            identity=identity,
            state=view.state,
            since=state.since.get(key) if view.state is TargetState.TRACING else None,
            reason=view.reason or None,
            not_applied=sorted({r.reason for r in view.not_applied.values()}),
            events_lost=state.lost(key),
        ))
    sources = source_statuses(state)
    not_applied, omitted = not_applied_rows(state)
    profiles, profiles_omitted = profile_rows(state)
    conditions = _conditions(previous, report, health, state, now)
    return NodeTracerStatus(
        observed_generation=state.generation if state.spec_seen else None,
        conditions=_sources_applied(conditions, sources, now, state.generation),
        last_heartbeat_time=now,
        agent_version=agent_version,
        backend=report.backend.to_status(),
        kernel=report.kernel.to_status(),
        cgroup=report.cgroup.to_status(),
        runtime=health.runtime,
        traced_containers=sum(1 for t in targets if t.state == TargetState.TRACING),
        events_seen=stats.events_seen,
        events_dropped=stats.events_dropped,
        capacity_exceeded=sum(
            1 for t in targets if NotAppliedReason.CAPACITY_EXCEEDED in t.not_applied
        ),
        sources=sources,
        maps=[MapUsage(name=m.name, used=m.used, capacity=m.capacity) for m in stats.maps],
        targets=targets,
        not_applied=not_applied,
        not_applied_omitted=omitted,
        profiles=profiles,
        profiles_omitted=profiles_omitted,
        seccomp_profiles=installs,
    )


def profile_rows(state: NodeState) -> tuple[list[TargetProfile], int]:
    """The workload syscalls of every target a profile source selects, by pod UID and
    container: the first MAX_NODE_PROFILES, and how many more there are."""
    profile_sources = {sid for sid, s in state.sources.items() if s.profile}
    rows = [
        TargetProfile(pod_uid=key[0], container=key[1],
                      syscall_set=encode(state.workload[key].syscalls),
                      start_seen=state.workload[key].start_seen)
        for key, planned in sorted(state.plan.targets.items())
        if key in state.workload and profile_sources & set(planned.target.sources)
    ]  # fmt: skip
    return rows[:MAX_NODE_PROFILES], max(0, len(rows) - MAX_NODE_PROFILES)
