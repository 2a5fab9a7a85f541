"""The agent's node state: what the spec asks, which pods and container cgroups
exist, what each target did. No I/O: the loop in `agent.py` feeds it watch
events, backend events and counts, and applies the trace changes it returns.

Containers are traced from their first syscall: the backend auto-traces every
new container cgroup under kubepods, and this state keeps such a cgroup (and
buffers its events) for a grace period while the operator's spec and the Pod's
status catch up. A cgroup that turns out to be nobody's target is untraced.

Results (`results.py`): each target's counts are kept once; each source that
traces a target has a window on it, opened when the source is applied to the
container (its baseline: the counts at that moment, or for a cgroup none of
whose counts were taken yet, its start) and closed when it no longer is. While
a window is open, what the container does is added to its source's totals on
the node. A source's totals stay a while after it leaves the spec (RETAIN_S),
so the operator reads what was counted last.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from podtrace_api.containertrace import TargetState
from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodetracer import NodeTracerSpec, TraceSource
from podtrace_api.syscalls import name_of

from ..backend import ConnectEvent, Event, ExecEvent, ExitEvent, OpenEvent, SourceLimits
from .apply import Applied
from .plan import CgroupRef, Plan, PodView, Rejection, TargetKey, TraceRequest, plan
from .results import Baseline, ContainerCounts, Observed, SourceTotals, Window
from .rules import Match, RuleSet
from .workload import Workload, workload_syscalls

RUNTIME_REEXEC = "/proc/self/exe"  # runc (and crun) re-exec themselves to set a container up
GRACE_S = 30.0  # how long an unclaimed new container stays traced, waiting for the spec
PENDING_EVENTS_PER_CGROUP = 256
RETAIN_S = 120.0  # how long a source's totals are reported after it left the spec


@dataclass
class KnownCgroup:
    """A container cgroup the agent has seen, with what the runtime said about it."""

    ref: CgroupRef
    container_id: str
    pod_uid: str
    container_name: str = ""  # from CRI; "" until known (or a sandbox)
    sandbox: bool = False
    first_seen: float = 0.0
    from_start: bool = False  # traced by the backend since its mkdir (workload.py)


@dataclass(frozen=True)
class Observation:
    """An event attributed to a target, with the rules it matched."""

    key: TargetKey
    event: Event
    matches: list[Match]


@dataclass(frozen=True)
class TargetView:
    """A target as the node reports it: its state with the sources not applied."""

    state: TargetState
    reason: str
    message: str
    not_applied: dict[str, Rejection]


@dataclass
class Changes:
    """What the loop must program into the backend."""

    trace: dict[int, TraceRequest] = field(default_factory=dict)
    untrace: set[int] = field(default_factory=set)


class NodeState:
    def __init__(
        self, name_of: Callable[[int], str] = name_of, limits: SourceLimits | None = None
    ) -> None:
        self.name_of = name_of
        self.limits = limits or SourceLimits()
        self.spec = NodeTracerSpec()
        self.generation = 0
        self.pods: dict[str, PodView] = {}
        self.cgroups: dict[int, KnownCgroup] = {}
        self.counts: dict[TargetKey, ContainerCounts] = {}  # each target's, kept once
        self.windows: dict[TargetKey, dict[str, Window]] = {}  # source id → its window
        self.totals: dict[str, SourceTotals] = {}  # each source's, on this node
        self.since: dict[TargetKey, datetime] = {}
        self._key_of: dict[int, TargetKey] = {}  # whose container a cgroup was
        self.rules = RuleSet([])
        self.sources: dict[str, TraceSource] = {}
        self.plan = Plan({}, {}, {})
        self.programmed: dict[int, TraceRequest] = {}
        self.dropped: set[int] = set()  # cgroups untraced as nobody's target
        # Sources the backend refused for a cgroup (full tables, failures): retried each replan.
        self.refused: dict[int, dict[str, Rejection]] = {}
        self._started: set[int] = set()  # cgroups whose entrypoint exec was seen
        self.workload: dict[TargetKey, Workload] = {}  # for seccomp profiles (workload.py)
        self._pending: dict[int, deque[Event]] = {}
        self.spec_seen = False

    # -- inputs --------------------------------------------------------------------
    def set_spec(self, spec: NodeTracerSpec, generation: int) -> None:
        self.spec, self.generation, self.spec_seen = spec, generation, True
        self.sources = {s.id: s for s in spec.sources}
        self.rules = RuleSet(spec.sources)

    def set_pod(self, pod: PodView) -> None:
        self.pods[pod.uid] = pod

    def delete_pod(self, uid: str) -> None:
        self.pods.pop(uid, None)

    def add_cgroup(self, known: KnownCgroup) -> None:
        self.cgroups[known.ref.cgroup_id] = known

    def remove_cgroup(self, cgroup_id: int) -> None:
        """The cgroup is gone; its target keeps what it did (results are cumulative)."""
        self._retire(cgroup_id)
        self.cgroups.pop(cgroup_id, None)
        self._pending.pop(cgroup_id, None)
        self.programmed.pop(cgroup_id, None)
        self.refused.pop(cgroup_id, None)
        self.dropped.discard(cgroup_id)
        self._started.discard(cgroup_id)

    # -- planning ------------------------------------------------------------------
    def replan(self, now: float, wall: datetime) -> tuple[Changes, list[Observation]]:
        """Recompute the plan; the backend changes to make and the buffered events
        of cgroups that were just claimed by a target."""
        by_container = {k.container_id: k.ref for k in self.cgroups.values() if not k.sandbox}
        named = {
            (k.pod_uid, k.container_name): k.container_id
            for k in sorted(self.cgroups.values(), key=lambda k: k.first_seen)
            if k.container_name and not k.sandbox
        }
        self.plan = plan(self.spec, self.pods, by_container, named, self.limits)
        changes = Changes()
        for cgroup_id, request in self.plan.traces.items():
            if self.programmed.get(cgroup_id) != request:
                changes.trace[cgroup_id] = request
            key = self.plan.cgroup_targets[cgroup_id]
            self.since.setdefault(key, wall)
        self._sync_windows(now, wall, confirm=False)
        for cgroup_id, known in self.cgroups.items():
            if cgroup_id in self.plan.traces or cgroup_id in self.dropped:
                continue
            waiting = not self.spec_seen or (now - known.first_seen < GRACE_S and not known.sandbox)
            if not waiting:
                changes.untrace.add(cgroup_id)
                self._pending.pop(cgroup_id, None)
        for cgroup_id in set(self.programmed) - set(self.plan.traces):
            changes.untrace.add(cgroup_id)
        replayed = []
        for cgroup_id in [c for c in self._pending if c in self.plan.cgroup_targets]:
            for event in self._pending.pop(cgroup_id):
                observed = self._attribute(event, wall)
                if observed is not None:
                    replayed.append(observed)
        return changes, replayed

    def applied(self, changes: Changes, outcomes: Mapping[int, Applied] | None = None) -> None:
        """What the backend did of `changes`: each traced cgroup's outcome (a cgroup
        with sources refused is tried again at the next replan; no `outcomes`: all
        of it was done), the untraces."""
        for cgroup_id, request in changes.trace.items():
            outcome = Applied(request) if outcomes is None else outcomes.get(cgroup_id)
            self.dropped.discard(cgroup_id)
            if outcome is not None and outcome.complete:
                self.programmed[cgroup_id] = request
                self.refused.pop(cgroup_id, None)
            else:
                self.programmed.pop(cgroup_id, None)
                self.refused[cgroup_id] = dict(outcome.rejected) if outcome else {}
        for cgroup_id in changes.untrace:
            self.programmed.pop(cgroup_id, None)
            self.refused.pop(cgroup_id, None)
            self.dropped.add(cgroup_id)
            self._retire(cgroup_id)  # the backend dropped its counts
        self._sync_windows(None, None, confirm=True)

    # -- windows -------------------------------------------------------------------
    def _sync_windows(self, now: float | None, wall: datetime | None, confirm: bool) -> None:
        """Open a window for every source applied to a traced target, close the others.
        After the backend applied the plan (`confirm`), the windows left are real."""
        for key in [k for k in self.windows if k not in self.plan.targets]:
            for sid in list(self.windows[key]):
                self._close(key, sid)
            del self.windows[key]
        for key, planned in self.plan.targets.items():
            cgroup_id = planned.cgroup_id
            wanted = self.applied_sources(key) & self.sources.keys() \
                if cgroup_id is not None else frozenset()
            open_ = self.windows.setdefault(key, {})
            for sid in [s for s in open_ if s not in wanted]:
                self._close(key, sid)
            if wanted - open_.keys():
                counts = self.counts.setdefault(key, ContainerCounts())
                # A cgroup none of whose counts were taken yet (a container just claimed,
                # traced since its mkdir or since it was programmed) is counted from its
                # start; else from the next counts.
                fresh = not counts.counts(cgroup_id)
                for sid in sorted(wanted - open_.keys()):
                    window = open_[sid] = Window.at(
                        key[1], Baseline.of(counts, cgroup_id) if fresh else None)
                    self._totals_of(sid, wall).opened(window, counts)
            if not open_:
                del self.windows[key]
            elif confirm:
                for sid, window in open_.items():
                    if not window.confirmed:
                        self.totals[sid].confirm(window)
        self._key_of.update(self.plan.cgroup_targets)
        for key in [k for k in self.counts if k not in self.plan.targets]:
            del self.counts[key]  # closed above; what it did is in its sources' totals
            self.workload.pop(key, None)
            self.since.pop(key, None)
        if now is not None:
            self._expire(now)

    def _totals_of(self, sid: str, wall: datetime | None) -> SourceTotals:
        totals = self.totals.get(sid)
        if totals is None:
            totals = self.totals[sid] = SourceTotals(self.sources[sid], wall or datetime.now(UTC))
        return totals

    def _close(self, key: TargetKey, sid: str) -> None:
        """The source stops tracing the container: what it counted stays its own (an
        unconfirmed window takes back what it added)."""
        window = self.windows[key].pop(sid)
        totals = self.totals.get(sid)
        if not window.confirmed and totals is not None:
            totals.drop(window, self.counts.get(key, ContainerCounts()))

    def _expire(self, now: float) -> None:
        """Sources that left the spec: their totals are kept RETAIN_S, then dropped."""
        for sid, totals in list(self.totals.items()):
            if sid in self.sources:
                totals.source, totals.left_at = self.sources[sid], None
            elif totals.left_at is None:
                totals.left_at = now
            elif now - totals.left_at > RETAIN_S:
                del self.totals[sid]

    def _retire(self, cgroup_id: int) -> None:
        key = self._key_of.pop(cgroup_id, None)
        if key is not None and key in self.counts:
            self.counts[key].retire(cgroup_id)

    def needs_counts(self) -> bool:
        """Whether a window waits for its baseline: read the counts now (`on_counts`)."""
        return any(not w.counting for ws in self.windows.values() for w in ws.values())

    def observed(self, sid: str) -> Observed:
        """What a source saw on this node, its windows closed and open (read only)."""
        totals = self.totals.get(sid)
        return totals.seen if totals is not None else Observed()

    def lost(self, key: TargetKey) -> int:
        """Events the backend lost of a target's container."""
        counts = self.counts.get(key)
        return counts.lost() if counts is not None else 0

    def not_applied(self, key: TargetKey) -> dict[str, Rejection]:
        """The sources of a target that do not trace it, with the reason."""
        planned = self.plan.targets.get(key)
        if planned is None:
            return {}
        out = dict(self.plan.not_applied.get(key, {}))
        if planned.cgroup_id is not None:
            mine = set(planned.target.sources)
            refused = self.refused.get(planned.cgroup_id, {})
            out.update((sid, r) for sid, r in refused.items() if sid in mine)
        return dict(sorted(out.items()))

    def target_view(self, key: TargetKey) -> TargetView:
        """The one place that decides a target's reported state: Tracing only when at
        least one of its sources is applied; Pending with the reason otherwise."""
        planned = self.plan.targets[key]
        rejected = self.not_applied(key)
        if planned.state is not TargetState.TRACING or set(planned.target.sources) - set(rejected):
            return TargetView(planned.state, planned.reason, planned.message, rejected)
        reasons = [r.reason for r in rejected.values()]
        reason = NotAppliedReason.APPLY_FAILED
        if NotAppliedReason.CAPACITY_EXCEEDED in reasons:
            reason = NotAppliedReason.CAPACITY_EXCEEDED
        elif reasons:
            reason = NotAppliedReason(reasons[0])
        message = next((f"{sid}: {r.message}" for sid, r in rejected.items()
                        if r.reason == reason), "the backend refused every source")
        return TargetView(TargetState.PENDING, reason.value, message, rejected)

    def applied_sources(self, key: TargetKey) -> frozenset[str]:
        """The sources that trace a target now."""
        planned = self.plan.targets.get(key)
        if planned is None:
            return frozenset()
        return frozenset(planned.target.sources) - self.not_applied(key).keys()

    # -- observations --------------------------------------------------------------
    def on_event(self, event: Event, wall: datetime) -> Observation | None:
        """Attribute a process/file/network event to its target, or buffer it while
        its cgroup is still unclaimed."""
        if event.cgroup_id not in self.plan.cgroup_targets:
            if event.cgroup_id in self.cgroups:
                queue = self._pending.setdefault(
                    event.cgroup_id, deque(maxlen=PENDING_EVENTS_PER_CGROUP)
                )
                queue.append(event)
            return None
        return self._attribute(event, wall)

    def _attribute(self, event: Event, wall: datetime) -> Observation | None:
        key = self.plan.cgroup_targets.get(event.cgroup_id)
        if key is None:
            return None
        windows = self.windows.get(key, {})
        sources = frozenset(windows)
        matches: list[Match] = []
        if isinstance(event, ExecEvent):
            if event.cgroup_id not in self._started:
                if event.filename == RUNTIME_REEXEC:
                    return None  # the runtime setting the container up, not the workload
                self._started.add(event.cgroup_id)
            for sid, window in windows.items():
                self.totals[sid].add_exec(window, event.filename, wall)
            matches = self.rules.on_exec(event.filename, sources)
        elif isinstance(event, OpenEvent):
            matches = self.rules.on_open(event.path, sources)
        elif not isinstance(event, ExitEvent | ConnectEvent):
            return None
        for match in matches:
            sid = match.ref.source
            self.totals[sid].add_match(windows[sid], match.ref.rule, match.count)
        return Observation(key, event, matches)

    def on_workload(
        self, counts: Mapping[int, Mapping[int, int]], markers: Mapping[int, Mapping[int, int]]
    ) -> None:
        """Take the containers' cumulative counts with their runtime markers (both by the
        container's own cgroup): what each target's workload did (workload.py)."""
        for cgroup_id, now in counts.items():
            key = self.plan.cgroup_targets.get(cgroup_id)
            if key is None:
                continue
            known = self.cgroups.get(cgroup_id)
            setting_up = known is not None and known.from_start and cgroup_id not in self._started
            found = workload_syscalls(now, markers.get(cgroup_id), setting_up)
            if found is not None:
                record = self.workload.setdefault(key, Workload())
                record.syscalls |= found[0]
                record.start_seen = record.start_seen or found[1]

    def on_counts(
        self,
        counts: Mapping[int, Mapping[int, int]],
        lost: Mapping[int, int] | None = None,
    ) -> list[tuple[TargetKey, Match]]:
        """Take the backend's cumulative syscall counts (and events lost, by cgroup);
        the syscall-rule matches of what is new since the last call. Windows waiting
        for a baseline take it from these counts."""
        out: list[tuple[TargetKey, Match]] = []
        lost = lost or {}
        for cgroup_id, now in counts.items():
            key = self.plan.cgroup_targets.get(cgroup_id)
            if key is None:
                continue
            grown, lost_grown = self.counts.setdefault(key, ContainerCounts()).update(
                cgroup_id, now, lost.get(cgroup_id))
            windows = self.windows.get(key, {})
            for sid, window in windows.items():
                if window.counting:
                    self.totals[sid].grew(grown, lost_grown)
            for match in self.rules.on_syscalls(grown, frozenset(windows)):
                sid = match.ref.source
                self.totals[sid].add_match(windows[sid], match.ref.rule, match.count)
                out.append((key, match))
        for key, windows in self.windows.items():
            for window in windows.values():
                if not window.counting:  # from now on
                    window.counting = True
                    if not window.confirmed:
                        window.baseline = Baseline.of(self.counts.setdefault(key,
                                                                             ContainerCounts()))
        return out
