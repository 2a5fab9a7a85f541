"""Rule matching: which TracingPolicy rules an event or a syscall count matches.

Rules are compiled once per NodeTracer spec into lookup tables, so matching an
exec is one dict lookup however many policies there are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podtrace_api.nodetracer import TraceSource
from podtrace_api.observe import EventType, Rule
from podtrace_api.syscalls import number_of


@dataclass(frozen=True)
class RuleRef:
    """One rule of one source."""

    source: str
    rule: str
    reason: str
    type: EventType
    message: str


@dataclass(frozen=True)
class Match:
    """A rule that matched, and what matched it (for the Event message)."""

    ref: RuleRef
    what: str
    count: int = 1


def _ref(source: TraceSource, rule: Rule) -> RuleRef:
    return RuleRef(source.id, rule.name, rule.reason, EventType(rule.type), rule.message)


class RuleSet:
    """The rules of a set of sources, indexed for matching."""

    def __init__(self, sources: Iterable[TraceSource]) -> None:
        self._exec: dict[str, list[RuleRef]] = defaultdict(list)
        self._open: list[tuple[str, RuleRef]] = []
        self._syscall: dict[int, list[tuple[str, RuleRef]]] = defaultdict(list)
        for source in sources:
            for rule in source.rules:
                ref = _ref(source, rule)
                for filename in rule.exec_filenames or ():
                    self._exec[filename].append(ref)
                for prefix in rule.open_path_prefixes or ():
                    self._open.append((prefix, ref))
                for name in rule.syscalls or ():
                    number = number_of(name)
                    if number is not None:  # the operator marks unknown names Invalid
                        self._syscall[number].append((name, ref))

    def on_exec(self, filename: str, sources: frozenset[str]) -> list[Match]:
        """Rules of `sources` matched by an exec of `filename`."""
        refs = self._exec.get(filename, ())
        return [Match(ref, filename) for ref in refs if ref.source in sources]

    def on_open(self, path: str, sources: frozenset[str]) -> list[Match]:
        """Rules of `sources` matched by an open of `path`."""
        return [
            Match(ref, path)
            for prefix, ref in self._open
            if ref.source in sources and path.startswith(prefix)
        ]

    def on_syscalls(self, delta: Mapping[int, int], sources: frozenset[str]) -> list[Match]:
        """Rules of `sources` matched by new syscalls (`delta`: nr → calls since last time)."""
        return [
            Match(ref, name, count)
            for number, count in delta.items()
            if count > 0
            for name, ref in self._syscall.get(number, ())
            if ref.source in sources
        ]

    @property
    def watched_syscalls(self) -> frozenset[int]:
        """Syscall numbers some rule denies."""
        return frozenset(self._syscall)


def count_delta(before: Mapping[int, int], now: Mapping[int, int]) -> dict[int, int]:
    """New calls per syscall between two cumulative snapshots.

    >>> count_delta({1: 5}, {1: 7, 2: 1})
    {1: 2, 2: 1}
    """
    return {nr: n - before.get(nr, 0) for nr, n in now.items() if n > before.get(nr, 0)}
