"""Results on one node: what each container did, kept once, and what each source
saw of it from the moment the source began tracing that container.

    ContainerCounts   one target container: cumulative syscall counts and lost
                      events over every cgroup it had (restarts), never going down
    Window            one source tracing one container: a baseline of the
                      container's counts when it began, plus the execs and rule
                      matches seen while it traced
    SourceTotals      one source on the node: its closed windows folded together

A source's results are its closed windows plus its open ones (counts minus the
baseline), so a ContainerTrace that starts while a policy already traces a
container counts only what came after, and a container that leaves a source's
targets and comes back is counted once for each stretch it was traced. Bounded
lists (`SourceResult`) are cut here, with counts of what was left out.
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

    def update(self, cgroup_id: int, counts: Mapping[int, int], lost: int | None = None) -> None:
        """The backend's cumulative numbers for one of the container's cgroups."""
        before = self._by_cgroup.get(cgroup_id, Counter())
        lost_before = self._lost_by_cgroup.get(cgroup_id, 0)
        went_back = any(counts.get(n, 0) < c for n, c in before.items())
        if went_back or (lost is not None and lost < lost_before):
            self.retire(cgroup_id)  # the backend counts this cgroup from zero again
        self._by_cgroup[cgroup_id] = Counter({n: c for n, c in counts.items() if c})
        if lost is not None:
            self._lost_by_cgroup[cgroup_id] = lost
        while len(self._by_cgroup) > MAX_CGROUPS_KEPT:
            self.retire(next(iter(self._by_cgroup)))

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
    """One source tracing one container. Without a baseline it counts no syscalls
    yet: the baseline is taken from the next counts read (`NodeState.on_counts`).
    Unconfirmed until the backend is known to apply the source: a window closed
    before that is dropped (the source never traced the container)."""

    container: str
    baseline: Baseline | None = None
    confirmed: bool = False
    seen: Observed = field(default_factory=Observed)  # execs and rule matches

    def add_exec(self, filename: str, when: datetime) -> None:
        self.seen.add_exec(filename, 1, (when, self.container))

    def add_match(self, rule: str, count: int = 1) -> None:
        self.seen.rules[rule] += count

    def observed(self, counts: ContainerCounts) -> Observed:
        """What this source saw of the container so far."""
        out = Observed()
        out.add(self.seen)
        if self.baseline is not None:
            out.syscalls = counts.syscalls() - self.baseline.syscalls
            out.lost = max(0, counts.lost() - self.baseline.lost)
        return out


@dataclass
class SourceTotals:
    """One source on this node: what its closed windows saw, since `since`."""

    source: TraceSource  # as the spec last had it (its observe filters the report)
    since: datetime
    closed: Observed = field(default_factory=Observed)
    left_at: float | None = None  # monotonic time it left the spec; kept a while after


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
        omitted = len(observed.execs) - len(most)
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
