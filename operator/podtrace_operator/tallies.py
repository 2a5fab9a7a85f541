"""What a policy or trace has counted so far, kept when the counted containers go.

An agent reports cumulative results per target (pod UID + container) and
source, but only for targets in its NodeTracer spec: once a pod finishes or is
deleted, its target leaves the spec and its results leave the agent's status.
The ledger remembers each target's last results, and moves them into a carried
total when the target disappears or its counters go backwards (the agent
restarted and counts from zero again). A source's total is carried + live.

The ledger lives in memory. After an operator restart it is seeded from the
status the operator wrote last (stored totals minus what is live now), so
totals do not drop; what happened between that last write and the restart on
targets that are gone by then is the one thing that can be missed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from podtrace_api.containertrace import ExecRecord
from podtrace_api.nodetracer import SourceResult

from .reports import NodeReport

Key = tuple[str, str, str]  # node, pod UID, container


@dataclass
class Tally:
    """Counts of one source (over one target, or summed over many)."""

    syscalls: dict[str, int] = field(default_factory=dict)
    syscalls_total: int = 0
    execs: dict[str, ExecRecord] = field(default_factory=dict)
    execs_total: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # syscalls ever seen (the seccomp profile)

    @classmethod
    def of(cls, result: SourceResult) -> Tally:
        return cls(
            syscalls=dict(result.syscalls),
            syscalls_total=max(result.syscalls_total, sum(result.syscalls.values())),
            execs={e.filename: e for e in result.execs},
            execs_total=result.execs_total,
            rules={m.rule: m.count for m in result.rule_matches},
            names={n for n, c in result.syscalls.items() if c > 0},
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

    def went_back_from(self, before: Tally) -> bool:
        """Whether any counter is lower than `before` (the counting started over)."""
        pairs = [(self.syscalls_total, before.syscalls_total),
                 (self.execs_total, before.execs_total)]  # fmt: skip
        pairs += [(self.syscalls.get(n, 0), c) for n, c in before.syscalls.items()]
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
    """Per source: the carried totals of targets gone, and each live target's last results."""

    def __init__(self) -> None:
        self._carried: dict[str, Tally] = {}
        self._last: defaultdict[str, dict[Key, Tally]] = defaultdict(dict)  # source → key →
        self._seeded: set[str] = set()

    def observe(self, node: str, before: NodeReport | None, after: NodeReport | None) -> None:
        """A node's report changed from `before` to `after` (None: no NodeTracer)."""
        now: dict[tuple[str, Key], Tally] = {}
        for target in after.targets if after else ():
            for result in target.results:
                now[(result.source, (node, target.pod_uid, target.container))] = Tally.of(result)
        gone = [
            (result.source, (node, target.pod_uid, target.container))
            for target in (before.targets if before else ())
            for result in target.results
        ]
        for source, key in gone:
            if (source, key) not in now:
                self._retire(source, key)
        for (source, key), tally in now.items():
            last = self._last[source].get(key)
            if last is not None and tally.went_back_from(last):
                self._carry(source).add(last)
            self._last[source][key] = tally

    def _retire(self, source: str, key: Key) -> None:
        last = self._last.get(source, {}).pop(key, None)
        if last is not None:
            self._carry(source).add(last)

    def _carry(self, source: str) -> Tally:
        return self._carried.setdefault(source, Tally())

    def live(self, source: str) -> Tally:
        total = Tally()
        for tally in self._last.get(source, {}).values():
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
