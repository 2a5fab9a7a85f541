"""Per-target results: what one container did, kept in memory and turned into
the bounded `SourceResult`s of NodeTracer status, one per source that asked.

Counts are cumulative for the life of the agent: a container that restarts gets
a new cgroup, and the old cgroup's last snapshot is kept (folded into a carried
total), so nothing is lost when a container exits or the apiserver is away.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from podtrace_api.containertrace import ExecRecord
from podtrace_api.nodetracer import SourceResult, TraceSource
from podtrace_api.observe import SyscallMode
from podtrace_api.tracingpolicy import RuleCount

MAX_EXECS_REPORTED = 64  # SourceResult.execs maxItems
MAX_EXECS_KEPT = 1024  # distinct filenames remembered per target
MAX_CGROUPS_KEPT = 8  # cgroups (container restarts) kept apart before folding


@dataclass
class TargetResults:
    """Everything observed in one target container (pod UID + container name)."""

    container: str
    _by_cgroup: dict[int, dict[int, int]] = field(default_factory=dict)
    _carried: Counter[int] = field(default_factory=Counter)
    execs: Counter[str] = field(default_factory=Counter)
    exec_first_seen: dict[str, datetime] = field(default_factory=dict)
    execs_total: int = 0
    rule_matches: Counter[tuple[str, str]] = field(default_factory=Counter)

    def update_syscalls(self, cgroup_id: int, cumulative: Mapping[int, int]) -> None:
        """Record the backend's cumulative counts for one of the target's cgroups."""
        self._by_cgroup[cgroup_id] = dict(cumulative)
        while len(self._by_cgroup) > MAX_CGROUPS_KEPT:
            oldest = next(iter(self._by_cgroup))
            self._carried.update(self._by_cgroup.pop(oldest))

    def syscalls(self) -> Counter[int]:
        """Syscall nr → calls, over every cgroup the target ever had."""
        total = Counter(self._carried)
        for counts in self._by_cgroup.values():
            total.update(counts)
        return total

    def add_exec(self, filename: str, when: datetime) -> None:
        self.execs_total += 1
        if filename in self.execs or len(self.execs) < MAX_EXECS_KEPT:
            self.execs[filename] += 1
            self.exec_first_seen.setdefault(filename, when)

    def add_match(self, source: str, rule: str, count: int = 1) -> None:
        self.rule_matches[(source, rule)] += count

    def for_source(self, source: TraceSource, name_of: Callable[[int], str]) -> SourceResult:
        """The bounded result of this target for one source, filtered by what it observes."""
        observe = source.observe
        syscalls: dict[str, int] = {}
        if observe.syscalls.mode != SyscallMode.NONE:
            named = observe.syscalls.mode == SyscallMode.NAMED
            wanted = set(observe.syscalls.names) if named else None
            for number, count in self.syscalls().items():
                name = name_of(number)
                if count and (wanted is None or name in wanted):
                    syscalls[name] = syscalls.get(name, 0) + count
        execs: list[ExecRecord] = []
        execs_total = 0
        if observe.processes.exec:
            execs_total = self.execs_total
            top = sorted(self.execs.items(), key=lambda item: (-item[1], item[0]))
            execs = [
                ExecRecord(filename=name, count=count, container=self.container,
                           first_seen=self.exec_first_seen.get(name))
                for name, count in top[:MAX_EXECS_REPORTED]
            ]
        matches = sorted(
            (RuleCount(rule=rule, count=count)
             for (src, rule), count in self.rule_matches.items() if src == source.id),
            key=lambda rc: rc.rule,
        )
        return SourceResult(
            source=source.id,
            syscalls=dict(sorted(syscalls.items())),
            syscalls_total=sum(syscalls.values()),
            execs=execs,
            execs_total=execs_total,
            rule_matches=matches,
        )
