"""ContainerTrace status: the phase machine, the results merged from every
node's report, and the Events its transitions raise. Pure.

    Pending ──(an agent reports a selected container Tracing)──► Tracing
    Pending ──(nothing traced within the pending timeout)──────► Failed
    Tracing ──(duration elapsed)───────────────────────────────► Completed
    any     ──(spec invalid)───────────────────────────────────► Failed (Valid=False)
    Failed because invalid ──(spec fixed)──────────────────────► Pending

Completed and Failed are final: the trace stops selecting (the compile step
drops it) and its results stay as they were at that moment.

When a node's backend lost events of the traced containers (ftrace: a buffer
overran), condition Complete is False and, with a profile requested,
ProfileComplete is False too: a syscall seen only in lost events is missing from
the profile, which may then be too strict. While the agent of a node with a target
or counts of the trace sends no heartbeat, condition Reporting is False and names
that node (heartbeats.py): its targets and counts are as last reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from podtrace_api.base import Condition, ConditionStatus, parse_duration
from podtrace_api.conditions import get_condition, set_condition
from podtrace_api.containertrace import (
    MAX_PROFILE_CONTAINERS,
    ContainerProfile,
    ContainerTraceSpec,
    ContainerTraceStatus,
    ExecRecord,
    SeccompProfileResult,
    SyscallCount,
    SyscallCoverage,
    SyscallHistogram,
    TargetState,
    TracedTarget,
    TracePhase,
)
from podtrace_api.nodetracer import TARGET_REASONS

from .applied import applied_condition, applied_events
from .events import EventSpec, EventType, validity_events
from .heartbeats import Silence, reporting_condition, reporting_events
from .installs import INSTALL_FAILED, NAME_TAKEN, PROFILE_INSTALLED, TOO_MANY
from .profiles import ContainerSyscalls
from .reports import NodeReport
from .seccomp import profile_files, profile_key
from .tallies import Tally
from .validation import Problem, summary

MAX_TARGETS = 256  # ContainerTraceStatus.targets maxItems
MAX_EXECS = 64
MAX_TOP = 64
COMPLETE = "Complete"
PROFILE_COMPLETE = "ProfileComplete"
EVENTS_LOST = "EventsLost"
START_NOT_SEEN = "StartNotSeen"
PROFILES_OMITTED = "ProfilesOmitted"
ImageOf = Callable[[str, str], str]  # (pod UID, container) → image, "" when not known

FINAL = (TracePhase.COMPLETED, TracePhase.FAILED)


@dataclass(frozen=True)
class TraceInput:
    """One ContainerTrace as read from the apiserver."""

    name: str
    namespace: str
    generation: int
    created: datetime
    spec: ContainerTraceSpec | None  # None when it does not even parse
    problems: tuple[Problem, ...]
    old: ContainerTraceStatus | None

    @property
    def config_map_name(self) -> str:
        request = self.spec.seccomp_profile if self.spec else None
        return (request.config_map_name if request else None) or f"{self.name}-seccomp"


@dataclass(frozen=True)
class TraceOutcome:
    status: ContainerTraceStatus
    active: bool  # whether the compile step should still select for this trace
    deadline: datetime | None  # when to look again even if nothing changes
    profile_files: Mapping[str, str] | None = None  # ConfigMap key → profile JSON


def is_active(status: ContainerTraceStatus | None, valid: bool) -> bool:
    """Whether a trace with this stored status still selects pods."""
    return valid and (status is None or status.phase not in FINAL)


@dataclass(frozen=True)
class Results:
    """A trace's results merged over all nodes."""

    targets: list[TracedTarget]
    target_count: int
    tracing: int  # selected containers an agent reports Tracing for this trace
    histogram: SyscallHistogram
    syscall_names: list[str]
    execs_total: int
    execs: list[ExecRecord]
    execs_omitted: int
    lost: int  # events lost: the counts are incomplete
    lost_on: list[str]  # nodes reporting lost events now


def merge_results(
    source_id: str,
    generation: int,
    targets: Iterable[tuple[str, Mapping[str, Any]]],
    reports: Mapping[str, NodeReport],
    tally: Tally,
    top_n: int,
    image_of: ImageOf = lambda uid, container: "",
) -> Results:
    """Targets from the compile step joined with what their node's agent says; syscall
    and exec counts from the trace's tally (every node, reported now or before)."""
    traced: list[TracedTarget] = []
    tracing = 0
    for node, target in targets:
        report = reports.get(node)
        uid, container = target["podUid"], target["container"]
        seen = report.target(uid, container) if report else None
        state = TargetState(seen.state) if seen else TargetState.PENDING
        message = TARGET_REASONS.get(seen.reason or "", seen.reason or "") \
            if seen and state != TargetState.TRACING else ""
        refused = report.not_applied.get((uid, container, source_id)) if report else None
        if refused is not None:  # the node traces it, but not for this trace
            state, message = TargetState.PENDING, f"{refused.reason}: {refused.message}"
        if state == TargetState.TRACING and report and report.ready_for(source_id, generation):
            tracing += 1
        traced.append(TracedTarget(
            node=node, pod=target["pod"], pod_uid=uid, container=container,
            container_id=seen.container_id if seen else "",
            image=image_of(uid, container),
            cgroup_id=seen.cgroup_id if seen else None,
            state=state,
            since=seen.since if seen and state == TargetState.TRACING else None,
            message=message,
            events_lost=seen.events_lost if seen else 0,
        ))  # fmt: skip
    syscalls = {n: c for n, c in tally.syscalls.items() if c > 0}
    names = sorted(tally.names | syscalls.keys())
    top = sorted(syscalls.items(), key=lambda kv: (-kv[1], kv[0]))[: min(top_n, MAX_TOP)]
    execs = sorted(tally.execs.values(), key=lambda e: (-e.count, e.filename))
    lost_on = sorted(node for node, r in reports.items()
                     if (result := r.results_for(source_id)) and result.events_lost)
    return Results(
        targets=traced[:MAX_TARGETS],
        target_count=len(traced),
        tracing=tracing,
        histogram=SyscallHistogram(
            total=max(tally.syscalls_total, sum(syscalls.values())),
            distinct=len(names),
            top=[SyscallCount(name=n, count=c) for n, c in top],
        ),
        syscall_names=names,
        execs_total=tally.execs_total,
        execs=execs[:MAX_EXECS],
        execs_omitted=max(0, tally.execs_total - sum(e.count for e in execs[:MAX_EXECS])),
        lost=tally.lost,
        lost_on=lost_on,
    )


def profile_gap(
    profiles: Mapping[str, ContainerSyscalls], omitted_on: Mapping[str, int]
) -> tuple[str, str] | None:
    """Why the profiles may miss syscalls though no event was lost: a node left
    replicas out of its report, or replicas were running before they were traced."""
    if omitted_on:
        nodes = ", ".join(f"{n} ({c})" for n, c in sorted(omitted_on.items()))
        return PROFILES_OMITTED, (
            f"the profiles may be too strict: nodes left replicas out of their report "
            f"(node status.profiles is full) on {nodes}")
    late = {name: c.replicas - c.start_seen for name, c in profiles.items()
            if c.replicas > c.start_seen}
    if late:
        which = ", ".join(f"{name} ({n} of {profiles[name].replicas} replicas)"
                          for name, n in sorted(late.items()))
        return START_NOT_SEEN, (
            f"the profiles may be too strict: the start of {which} was not seen (they ran "
            "before the trace began, or their runtime made no runc marker), so their "
            "start-up syscalls may be missing. Restart those pods while the trace runs")
    return None


def completeness(
    conditions: list[Condition], results: Results, profile: bool, now: datetime, gen: int,
    gap: tuple[str, str] | None = None,
) -> list[Condition]:
    """Complete (and ProfileComplete, with a profile requested): False when a node's
    backend lost events of the traced containers; ProfileComplete also False for a
    `gap` in what the profiles saw (profile_gap)."""
    if not results.lost:
        conditions = set_condition(conditions, COMPLETE, True, "AllCounted",
                                   "every event of the traced containers was counted", now, gen)
        if profile and gap is not None:
            conditions = set_condition(conditions, PROFILE_COMPLETE, False, gap[0], gap[1],
                                       now, gen)
        elif profile:
            conditions = set_condition(conditions, PROFILE_COMPLETE, True, "AllCounted",
                                       "the profiles hold every syscall the containers' "
                                       "workloads made while traced", now, gen)
        return conditions
    where = f" (now on node {', '.join(results.lost_on)})" if results.lost_on else ""
    lost = (f"the tracing backend lost {results.lost} events of the traced containers{where}: "
            "its buffer overran")
    conditions = set_condition(conditions, COMPLETE, False, EVENTS_LOST,
                               f"{lost}; the counts are lower than what happened", now, gen)
    if profile:
        conditions = set_condition(
            conditions, PROFILE_COMPLETE, False, EVENTS_LOST,
            f"the profile may be too strict: {lost}, and a syscall seen only in lost events "
            "is not in it. Trace again with the bcc backend or a larger ftrace buffer",
            now, gen)
    return conditions


def stored_tally(status: ContainerTraceStatus | None) -> Tally | None:
    """What a stored status counted (to seed the ledger after a restart): the top of the
    histogram, the totals, the execs, and every name the stored profile allows."""
    if status is None:
        return None
    hist = status.syscalls or SyscallHistogram()
    names = {s.name for s in hist.top}
    if status.seccomp_profile:
        names |= {s.name for c in status.seccomp_profile.containers for s in c.syscalls}
    return Tally(
        syscalls={s.name: s.count for s in hist.top},
        syscalls_total=hist.total,
        execs={e.filename: e for e in status.execs},
        execs_total=status.execs_total,
        names=names,
        lost=status.events_lost,
    )


def trace_status(
    trace: TraceInput,
    *,
    source_id: str,
    targets: Iterable[tuple[str, Mapping[str, Any]]],
    reports: Mapping[str, NodeReport],
    tally: Tally,
    arches: Iterable[str],
    now: datetime,
    pending_timeout: timedelta,
    top_n: int,
    image_of: ImageOf = lambda uid, container: "",
    silent: Mapping[str, Silence] | None = None,
    profiles: Mapping[str, ContainerSyscalls] | None = None,
    profiles_omitted: Mapping[str, int] | None = None,
    left_out: Mapping[str, int] | None = None,
) -> TraceOutcome:
    """The status a ContainerTrace should have now, and when to look again; `silent`
    the nodes whose agent sends no heartbeat (named in condition Reporting)."""
    old = trace.old or ContainerTraceStatus()
    conditions = list(old.conditions)
    gen = trace.generation
    was_valid = get_condition(conditions, "Valid")

    if trace.problems or trace.spec is None:
        message = summary(trace.problems)
        conditions = set_condition(conditions, "Valid", False, "Invalid", message, now, gen)
        status = ContainerTraceStatus(
            observed_generation=gen, conditions=conditions, phase=TracePhase.FAILED,
            message=f"invalid: {message}",
            completion_time=old.completion_time if old.phase == TracePhase.FAILED else now,
        )  # fmt: skip
        return TraceOutcome(status, active=False, deadline=None)

    conditions = set_condition(
        conditions, "Valid", True, "Accepted", "the trace compiled", now, gen
    )
    fixed = was_valid is not None and was_valid.status == ConditionStatus.FALSE
    if old.phase in FINAL and not fixed:
        frozen = old.model_copy(update={"observed_generation": gen, "conditions": conditions})
        return TraceOutcome(frozen, active=False, deadline=None)
    if fixed:
        old = ContainerTraceStatus()  # a fixed spec starts over

    spec = trace.spec
    targets = list(targets)
    conditions = applied_condition(conditions, source_id, (n for n, _ in targets), reports,
                                   now, gen, left_out)
    results = merge_results(source_id, gen, targets, reports, tally, top_n, image_of)
    profiles = profiles or {}
    conditions = completeness(conditions, results, spec.seccomp_profile is not None, now, gen,
                              profile_gap(profiles, profiles_omitted or {}))
    counted_on = {n for n, _ in targets} | {n for n, r in reports.items() if source_id in r.sources}
    conditions = reporting_condition(conditions, counted_on, silent or {}, now, gen)
    phase, start, completion, deadline = old.phase, old.start_time, None, None
    duration = parse_duration(spec.duration) if spec.duration else None
    if phase == TracePhase.PENDING:
        valid_since = get_condition(conditions, "Valid")
        pending_since = max(trace.created, valid_since.last_transition_time if valid_since else now)
        if results.tracing:
            phase, start = TracePhase.TRACING, now
        elif now >= pending_since + pending_timeout:
            phase, completion = TracePhase.FAILED, now
        else:
            deadline = pending_since + pending_timeout
    if phase == TracePhase.TRACING and duration is not None:
        assert start is not None
        if now >= start + duration:
            phase, completion = TracePhase.COMPLETED, now
        else:
            deadline = start + duration

    status = ContainerTraceStatus(
        observed_generation=gen,
        conditions=conditions,
        phase=phase,
        message=_message(phase, results, pending_timeout, duration),
        start_time=start,
        completion_time=completion,
        target_count=results.target_count,
        targets=results.targets,
        syscalls=results.histogram if results.histogram.total else None,
        execs_total=results.execs_total,
        execs=results.execs,
        execs_omitted=results.execs_omitted,
        events_lost=results.lost,
        seccomp_profile=_profile(trace, spec, profiles),
    )
    files = None
    if spec.seccomp_profile is not None:
        files = profile_files({name: c.names() for name, c in profiles.items()},
                              spec.seccomp_profile.default_action, arches)
    return TraceOutcome(status, active=phase not in FINAL, deadline=deadline,
                        profile_files=files)


def _profile(
    trace: TraceInput, spec: ContainerTraceSpec, profiles: Mapping[str, ContainerSyscalls]
) -> SeccompProfileResult | None:
    # No profile before anything was observed: an allow-nothing profile would break the pod.
    profiles = {name: c for name, c in profiles.items() if c.names()}
    if spec.seccomp_profile is None or not profiles:
        return None
    listed = list(profiles.items())[:MAX_PROFILE_CONTAINERS]
    return SeccompProfileResult(
        config_map=trace.config_map_name,
        syscalls=len({n for c in profiles.values() for n in c.names()}),
        containers=[ContainerProfile(
            container=name, key=profile_key(name), replicas=c.replicas,
            start_seen=c.start_seen,
            syscalls=[SyscallCoverage(name=n, replicas=c.coverage[n]) for n in c.names()],
        ) for name, c in listed],
        containers_omitted=len(profiles) - len(listed),
    )  # fmt: skip


def _message(
    phase: TracePhase, results: Results, timeout: timedelta, duration: timedelta | None
) -> str:
    n = results.target_count
    if phase == TracePhase.PENDING:
        if n == 0:
            return "no running pod matches the selector yet"
        return f"{n} containers selected, waiting for their node agents to trace them"
    if phase == TracePhase.TRACING:
        return f"tracing {results.tracing} of {n} selected containers"
    if phase == TracePhase.COMPLETED:
        return f"traced for {_fmt(duration)}" if duration else "completed"
    if n == 0:
        return f"no running pod matched the selector within {_fmt(timeout)}"
    return f"{n} containers selected but no node agent traced them within {_fmt(timeout)}"


def _fmt(delta: timedelta | None) -> str:
    """A duration as Go prints it, roughly.

    >>> _fmt(timedelta(minutes=5, seconds=3))
    '5m3s'
    """
    seconds = int((delta or timedelta()).total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


def trace_events(old: ContainerTraceStatus | None, new: ContainerTraceStatus) -> list[EventSpec]:
    """Events for the transitions between two statuses."""
    old_conditions = old.conditions if old else []
    is_valid = get_condition(new.conditions, "Valid")
    events = validity_events(old_conditions, new.conditions, "trace accepted")
    events += applied_events(old_conditions, new.conditions)
    events += reporting_events(old_conditions, new.conditions)
    was, is_ = get_condition(old_conditions, COMPLETE), get_condition(new.conditions, COMPLETE)
    if is_ is not None and is_.status == ConditionStatus.FALSE and (
            was is None or was.status != ConditionStatus.FALSE):
        events.append(EventSpec(EventType.WARNING, EVENTS_LOST, is_.message, "Trace"))
    was, is_ = (get_condition(old_conditions, PROFILE_INSTALLED),
                get_condition(new.conditions, PROFILE_INSTALLED))
    if is_ is not None and (was is None or (was.status, was.reason) != (is_.status, is_.reason)):
        if is_.status == ConditionStatus.TRUE:
            events.append(EventSpec(EventType.NORMAL, "ProfileInstalled", is_.message, "Install"))
        elif is_.reason in (INSTALL_FAILED, NAME_TAKEN, TOO_MANY):
            events.append(EventSpec(EventType.WARNING, is_.reason, is_.message, "Install"))
    old_phase = old.phase if old else TracePhase.PENDING
    if new.phase != old_phase and is_valid is not None and is_valid.status == ConditionStatus.TRUE:
        if new.phase == TracePhase.TRACING:
            events.append(EventSpec(EventType.NORMAL, "Tracing", new.message, "Trace"))
        elif new.phase == TracePhase.COMPLETED:
            hist = new.syscalls or SyscallHistogram()
            note = (f"{new.message}: {new.target_count} containers, {hist.total} syscalls "
                    f"({hist.distinct} distinct), {new.execs_total} execs")  # fmt: skip
            events.append(EventSpec(EventType.NORMAL, "Completed", note, "Trace"))
        elif new.phase == TracePhase.FAILED:
            reason = "NoMatchingPods" if new.target_count == 0 else "NotTraced"
            events.append(EventSpec(EventType.WARNING, reason, new.message, "Trace"))
    return events
