"""Results on one node: what each container did, kept once, and what each source
saw of it from the moment the source began tracing that container.

    ContainerCounts   one target container: cumulative syscall counts and lost
                      events over every cgroup it had (restarts), never going down
    Window            one source tracing one container: a baseline of the
                      container's counts when it began
    SourceTotals      one source on the node: what all its windows saw, kept up
                      as counts and events arrive (what a container's counts grow
                      by is added to the source of each of its windows)

So a ContainerTrace that starts while a policy already traces a container counts
only what came after, and a container that leaves a source's targets and comes
back is counted once for each stretch it was traced. Bounded lists
(`SourceResult`) are cut here, with counts of what was left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from podtrace_api.budget import TOP_EXECS, TOP_SYSCALLS
from podtrace_api.containertrace import ExecRecord, SyscallCount
from podtrace_api.nodetracer import SourceResult, TraceSource
from podtrace_api.observe import SyscallMode
from podtrace_api.syscallset import encode
from podtrace_api.tracingpolicy import RuleCount

MAX_EXECS_KEPT = 1024  # distinct filenames remembered per window and per source
MAX_CGROUPS_KEPT = 8  # cgroups (container restarts) kept apart before folding


@dataclass
class ContainerCounts:
    """Cumulative counts of one target container over every cgroup it had.

    A cgroup whose counting restarts (untraced, then traced again) or ends is
    folded into the carried totals, so what `syscalls()` and `lost()` return
    only ever grows while the container is a target."""

    _by_cgroup: dict[int, Counter[int]] = field(default_factory=dict)
    _lost_by_cgroup: dict[int, int] = field(default_factory=dict)
    _carried: Counter[int] = field(default_factory=Counter)
    _carried_lost: int = 0

    def update(
        self, cgroup_id: int, counts: Mapping[int, int], lost: int | None = None
    ) -> tuple[dict[int, int], int]:
        """The backend's cumulative numbers for one of the container's cgroups; what
        the container's totals grew by (syscalls, lost events)."""
        before = self._by_cgroup.get(cgroup_id, Counter())
        if any(counts.get(n, 0) < c for n, c in before.items()):
            self._carried.update(self._by_cgroup.pop(cgroup_id))  # counted from zero again
            before = Counter()
        grown = {n: c - before.get(n, 0) for n, c in counts.items() if c > before.get(n, 0)}
        self._by_cgroup[cgroup_id] = Counter({n: c for n, c in counts.items() if c})
        lost_grown = 0
        if lost is not None:
            lost_before = self._lost_by_cgroup.get(cgroup_id, 0)
            # Lower: its lost events were counted from zero again (or a sub-cgroup went).
            lost_grown = lost - lost_before if lost >= lost_before else lost
            if lost < lost_before:
                self._carried_lost += lost_before
            self._lost_by_cgroup[cgroup_id] = lost
        while len(self._by_cgroup) > MAX_CGROUPS_KEPT:
            self.retire(next(iter(self._by_cgroup)))
        return grown, lost_grown

    def counts(self, cgroup_id: int) -> bool:
        """Whether this cgroup's counts are in the totals now."""
        return cgroup_id in self._by_cgroup

    def retire(self, cgroup_id: int) -> None:
        """The cgroup's counts end here (it is gone, or no longer traced)."""
        self._carried.update(self._by_cgroup.pop(cgroup_id, Counter()))
        self._carried_lost += self._lost_by_cgroup.pop(cgroup_id, 0)

    def syscalls(self, without: int | None = None) -> Counter[int]:
        """Syscall nr → calls over every cgroup, optionally leaving one out."""
        total = Counter(self._carried)
        for cgroup_id, counts in self._by_cgroup.items():
            if cgroup_id != without:
                total.update(counts)
        return total

    def lost(self, without: int | None = None) -> int:
        """Events the backend lost of this container."""
        return self._carried_lost + sum(
            n for cgroup_id, n in self._lost_by_cgroup.items() if cgroup_id != without
        )


@dataclass
class Observed:
    """What a source saw: syscall counts, execs, rule matches, events lost."""

    syscalls: Counter[int] = field(default_factory=Counter)
    execs: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # when, container
    execs_total: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    lost: int = 0

    def add_exec(self, filename: str, count: int, first: tuple[datetime, str]) -> None:
        self.execs_total += count
        if filename in self.execs or len(self.execs) < MAX_EXECS_KEPT:
            self.execs[filename] += count
            if filename not in self.first_seen or first < self.first_seen[filename]:
                self.first_seen[filename] = first

    def add(self, other: Observed) -> None:
        self.syscalls.update(other.syscalls)
        before = other.execs_total - sum(other.execs.values())  # execs not kept by name
        for filename, count in other.execs.items():
            self.add_exec(filename, count, other.first_seen[filename])
        self.execs_total += before
        self.rules.update(other.rules)
        self.lost += other.lost


@dataclass(frozen=True)
class Baseline:
    """A container's counts when a source began tracing it."""

    syscalls: Counter[int]
    lost: int

    @classmethod
    def of(cls, counts: ContainerCounts, without: int | None = None) -> Baseline:
        """The counts now; `without` a cgroup: as if taken when that cgroup began."""
        return cls(counts.syscalls(without), counts.lost(without))


@dataclass
class Window:
    """One source tracing one container. Until it is `counting` (its baseline taken
    from the next counts read, `NodeState.on_counts`) it counts no syscalls.
    Unconfirmed until the backend is known to apply the source: what it saw until
    then waits in `pending`, its baseline is kept, and a window closed before that
    is dropped, taking back what it added (the source never traced the container)."""

    container: str
    counting: bool = False
    confirmed: bool = False
    baseline: Baseline | None = None  # while unconfirmed
    pending: Observed = field(default_factory=Observed)  # execs and rule matches

    @classmethod
    def at(cls, container: str, baseline: Baseline | None) -> Window:
        """A window from `baseline` (None: from the next counts)."""
        return cls(container, counting=baseline is not None, baseline=baseline)

    def since_baseline(self, counts: ContainerCounts) -> tuple[Counter[int], int]:
        """What the container did since the baseline (nothing when there is none)."""
        if self.baseline is None:
            return Counter(), 0
        lost = max(0, counts.lost() - self.baseline.lost)
        return counts.syscalls() - self.baseline.syscalls, lost


@dataclass
class SourceTotals:
    """One source on this node: what its windows saw since `since`, closed or open."""

    source: TraceSource  # as the spec last had it (its observe filters the report)
    since: datetime
    seen: Observed = field(default_factory=Observed)
    left_at: float | None = None  # monotonic time it left the spec; kept a while after

    def add_exec(self, window: Window, filename: str, when: datetime) -> None:
        target = self.seen if window.confirmed else window.pending
        target.add_exec(filename, 1, (when, window.container))

    def add_match(self, window: Window, rule: str, count: int) -> None:
        (self.seen if window.confirmed else window.pending).rules[rule] += count

    def grew(self, syscalls: Mapping[int, int], lost: int) -> None:
        self.seen.syscalls.update(syscalls)
        self.seen.lost += lost

    def opened(self, window: Window, counts: ContainerCounts) -> None:
        """A window begins: what the container did since its baseline is the source's."""
        self.grew(*window.since_baseline(counts))

    def confirm(self, window: Window) -> None:
        self.seen.add(window.pending)
        window.pending, window.confirmed, window.baseline = Observed(), True, None

    def drop(self, window: Window, counts: ContainerCounts) -> None:
        """An unconfirmed window goes: take back what it added."""
        syscalls, lost = window.since_baseline(counts)
        self.seen.syscalls.subtract(syscalls)
        self.seen.syscalls = +self.seen.syscalls
        self.seen.lost = max(0, self.seen.lost - lost)


def source_result(
    source: TraceSource,
    since: datetime,
    observed: Observed,
    name_of: Callable[[int], str],
) -> SourceResult:
    """The bounded report of what one source saw, filtered by what it observes: the
    most frequent syscalls and programs by name, counts of the rest, every syscall
    number in `syscallSet`."""
    observe = source.observe
    by_name: Counter[str] = Counter()
    numbers: set[int] = set()
    if observe.syscalls.mode != SyscallMode.NONE:
        wanted = set(observe.syscalls.names) if observe.syscalls.mode == SyscallMode.NAMED \
            else None
        for number, count in observed.syscalls.items():
            name = name_of(number)
            if count > 0 and (wanted is None or name in wanted):
                by_name[name] += count
                numbers.add(number)
    top = _top(by_name.items(), TOP_SYSCALLS)
    execs: list[ExecRecord] = []
    execs_total = omitted = 0
    if observe.processes.exec:
        execs_total = observed.execs_total
        most = _top(observed.execs.items(), TOP_EXECS)
        omitted = execs_total - sum(count for _, count in most)
        execs = [
            ExecRecord(filename=name, count=count, container=observed.first_seen[name][1],
                       first_seen=observed.first_seen[name][0])
            for name, count in most
        ]
    return SourceResult(
        since=since,
        syscalls=[SyscallCount(name=n, count=c) for n, c in top],
        syscalls_total=sum(by_name.values()),
        syscalls_omitted=len(by_name) - len(top),
        syscall_set=encode(numbers),
        execs=execs,
        execs_total=execs_total,
        execs_omitted=omitted,
        rule_matches=[RuleCount(rule=r, count=c) for r, c in sorted(observed.rules.items()) if c],
        events_lost=observed.lost,
    )


def _top(items: Iterable[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """The n largest counts, ties by name.

    >>> _top([("b", 2), ("a", 2), ("c", 5)], 2)
    [('c', 5), ('a', 2)]
    """
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))[:n]
