"""What a policy or trace has counted so far, kept when the counting nodes stop
reporting it.

Each agent reports, per source, what the source's containers on its node did
since the source began tracing each of them, cumulative for as long as the
agent runs (`NodeTracer.status.sources[].results`), and keeps reporting it a
while after the source left its spec. The ledger remembers each node's last
results of each source, and moves them into a carried total when the node stops
reporting them (the source left the node, the NodeTracer is gone) or starts
over (a new `since`: the agent restarted; or counters going backwards). A
source's total is carried + live.

The ledger lives in memory. After an operator restart it is seeded from the
status the operator wrote last (stored totals minus what is live now), so
totals do not drop; what happened between that last write and the restart on
nodes that stopped reporting by then is the one thing that can be missed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from podtrace_api.containertrace import ExecRecord
from podtrace_api.nodetracer import SourceResult
from podtrace_api.syscalls import name_of
from podtrace_api.syscallset import decode

from .reports import NodeReport

Names = Callable[[int], str]  # a node's syscall number → name


@dataclass
class Tally:
    """Counts of one source (on one node, or summed over many)."""

    syscalls: dict[str, int] = field(default_factory=dict)  # the nodes' most frequent
    syscalls_total: int = 0
    execs: dict[str, ExecRecord] = field(default_factory=dict)
    execs_total: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # syscalls ever seen (the seccomp profile)
    lost: int = 0  # events the nodes' backends lost: the counts are incomplete

    @classmethod
    def of(cls, result: SourceResult, names: Names = name_of) -> Tally:
        top = {s.name: s.count for s in result.syscalls}
        return cls(
            syscalls=top,
            syscalls_total=max(result.syscalls_total, sum(top.values())),
            execs={e.filename: e for e in result.execs},
            execs_total=result.execs_total,
            rules={m.rule: m.count for m in result.rule_matches},
            names={n for n, c in top.items() if c > 0} | {names(n) for n in
                                                         decode(result.syscall_set)},
            lost=result.events_lost,
        )

    def add(self, other: Tally) -> None:
        for name, count in other.syscalls.items():
            self.syscalls[name] = self.syscalls.get(name, 0) + count
        self.syscalls_total += other.syscalls_total
        for filename, record in other.execs.items():
            self.execs[filename] = merge_exec(self.execs.get(filename), record)
        self.execs_total += other.execs_total
        for rule, count in other.rules.items():
            self.rules[rule] = self.rules.get(rule, 0) + count
        self.names |= other.names
        self.lost += other.lost

    def went_back_from(self, before: Tally) -> bool:
        """Whether any counter is lower than `before` (the counting started over)."""
        pairs = [(self.syscalls_total, before.syscalls_total),
                 (self.execs_total, before.execs_total), (self.lost, before.lost)]  # fmt: skip
        pairs += [(self.syscalls.get(n, 0), c) for n, c in before.syscalls.items()
                  if n in self.syscalls]  # a name can drop out of a node's top list
        pairs += [(self.rules.get(r, 0), c) for r, c in before.rules.items()]
        return any(now < then for now, then in pairs)

    def minus(self, live: Tally) -> Tally:
        """What `self` has beyond `live`, per counter, never below zero (for seeding)."""
        execs = {}
        for filename, record in self.execs.items():
            left = record.count - (live.execs[filename].count if filename in live.execs else 0)
            if left > 0:
                execs[filename] = record.model_copy(update={"count": left})
        return Tally(
            syscalls=_beyond(self.syscalls, live.syscalls),
            syscalls_total=max(0, self.syscalls_total - live.syscalls_total),
            execs=execs,
            execs_total=max(0, self.execs_total - live.execs_total),
            rules=_beyond(self.rules, live.rules),
            names=set(self.names),
            lost=max(0, self.lost - live.lost),
        )


def _beyond(counts: Mapping[str, int], live: Mapping[str, int]) -> dict[str, int]:
    return {k: c - live.get(k, 0) for k, c in counts.items() if c > live.get(k, 0)}


def merge_exec(a: ExecRecord | None, b: ExecRecord) -> ExecRecord:
    """One program's record from two: counts summed, the earliest first sighting kept."""
    if a is None:
        return b
    first = min((a, b), key=lambda e: (e.first_seen is None, e.first_seen or datetime.max))
    return ExecRecord(filename=a.filename, count=a.count + b.count,
                      container=first.container, first_seen=first.first_seen)  # fmt: skip


class Ledger:
    """Per source: the carried totals of what nodes stopped reporting, and each node's
    last results with the `since` they count from."""

    def __init__(self) -> None:
        self._carried: dict[str, Tally] = {}
        # source → node → (since, last results)
        self._last: defaultdict[str, dict[str, tuple[datetime | None, Tally]]] = \
            defaultdict(dict)
        self._seeded: set[str] = set()

    def observe(self, node: str, report: NodeReport | None, names: Names = name_of) -> None:
        """A node's report changed (None: the node has no NodeTracer any more);
        `names` reads the syscall numbers of that node's architecture."""
        now = {sid: (r.since, Tally.of(r, names))
               for sid, r in (report.with_results() if report else ())}
        for sid, by_node in list(self._last.items()):
            if node in by_node and sid not in now:
                self._carry(sid).add(by_node.pop(node)[1])
        for sid, (since, tally) in now.items():
            last = self._last[sid].get(node)
            if last is not None and (last[0] != since or tally.went_back_from(last[1])):
                self._carry(sid).add(last[1])
            self._last[sid][node] = (since, tally)

    def _carry(self, source: str) -> Tally:
        return self._carried.setdefault(source, Tally())

    def live(self, source: str) -> Tally:
        total = Tally()
        for _, tally in self._last.get(source, {}).values():
            total.add(tally)
        return total

    def total(self, source: str) -> Tally:
        """Carried plus live, for one source."""
        total = Tally()
        total.add(self._carried.get(source, Tally()))
        total.add(self.live(source))
        return total

    def seed(self, source: str, stored: Tally | None) -> None:
        """Once per source and process: carry what the last written status counted
        beyond what is live now."""
        if source in self._seeded:
            return
        self._seeded.add(source)
        if stored is not None:
            self._carry(source).add(stored.minus(self.live(source)))

    def forget(self, source: str) -> None:
        self._carried.pop(source, None)
        self._last.pop(source, None)
        self._seeded.discard(source)

    def sources(self) -> Iterable[str]:
        return self._carried.keys() | self._last.keys()


def rule_tally(rule_counts: Mapping[str, int]) -> Tally:
    return Tally(rules=dict(rule_counts))
