"""Seccomp profiles per container name, merged over a trace's replicas. Pure.

Each node's agent reports, for the targets of sources that build a profile, the
syscalls each target's workload made (`NodeTracer.status.profiles`: counted
after the runtime's last set-up step, runc init's prctl(PR_GET_PDEATHSIG)) and
whether it saw the container start. The book keeps, per trace, every replica
(pod UID and container name) it was ever told about, with the union of what it
reported, so a replica whose pod is gone stays in the profile. A profile is per
container name: the union over its replicas, each syscall with how many of them
made it (SPO's syscall coverage).

After an operator restart the book is seeded from the status written last:
what that status counted beyond the replicas reported again (each container's
replicas and per-syscall coverage, minus the live replicas' share) is carried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from podtrace_api.containertrace import SeccompProfileResult
from podtrace_api.nodetracer import TargetProfile
from podtrace_api.syscallset import decode

Names = Callable[[int], str]  # a node's syscall number → name
ReplicaKey = tuple[str, str]  # (pod UID, container name)


@dataclass
class Replica:
    """What one target's workload did, as its node reported it."""

    names: set[str] = field(default_factory=set)
    start_seen: bool = False


@dataclass
class ContainerSyscalls:
    """One container name's profile: its replicas and each syscall's coverage."""

    replicas: int = 0
    start_seen: int = 0
    coverage: Counter[str] = field(default_factory=Counter)

    def add(self, replica: Replica) -> None:
        self.replicas += 1
        self.start_seen += replica.start_seen
        self.coverage.update(replica.names)

    def names(self) -> list[str]:
        return sorted(n for n, c in self.coverage.items() if c > 0)


def replica_of(row: TargetProfile, names: Names) -> Replica:
    return Replica({names(n) for n in decode(row.syscall_set)}, row.start_seen)


class ProfileBook:
    """Per trace: its replicas' workload syscalls, and what was carried from before."""

    def __init__(self) -> None:
        self._replicas: dict[str, dict[ReplicaKey, Replica]] = {}
        self._carried: dict[str, dict[str, ContainerSyscalls]] = {}
        self._seeded: set[str] = set()
        self._omitted: dict[str, dict[str, int]] = {}  # source → node → targets not listed

    def observe(
        self,
        node: str,
        rows: Iterable[TargetProfile],
        spec_targets: Iterable[Mapping[str, Any]],
        names: Names,
        omitted: int = 0,
        profile_sources: frozenset[str] = frozenset(),
    ) -> None:
        """A node's report: each row goes to every source of the node's spec that selects
        its target and builds a profile; `omitted` rows the node left out."""
        sources_of = {(t["podUid"], t["container"]): [s for s in t.get("sources") or []
                                                      if s in profile_sources]
                      for t in spec_targets}  # fmt: skip
        for row in rows:
            replica = replica_of(row, names)
            for sid in sources_of.get((row.pod_uid, row.container), ()):
                book = self._replicas.setdefault(sid, {})
                known = book.setdefault((row.pod_uid, row.container), Replica())
                known.names |= replica.names
                known.start_seen = known.start_seen or replica.start_seen
        for sid in profile_sources:
            by_node = self._omitted.setdefault(sid, {})
            if omitted and any(sid in s for s in sources_of.values()):
                by_node[node] = omitted
            else:
                by_node.pop(node, None)

    def omitted_on(self, source: str) -> dict[str, int]:
        """Nodes that left targets of `source` out of their profile rows (now)."""
        return dict(self._omitted.get(source, {}))

    def seed(self, source: str, stored: SeccompProfileResult | None) -> None:
        """Once per source and process: carry what the last written status counted
        beyond the replicas reported since."""
        if source in self._seeded:
            return
        self._seeded.add(source)
        if stored is None:
            return
        live = self._merge(self._replicas.get(source, {}).items(), {})
        carried = self._carried.setdefault(source, {})
        for profile in stored.containers:
            now = live.get(profile.container, ContainerSyscalls())
            left = ContainerSyscalls(
                replicas=max(0, profile.replicas - now.replicas),
                start_seen=max(0, profile.start_seen - now.start_seen),
                coverage=Counter({s.name: s.replicas - now.coverage.get(s.name, 0)
                                  for s in profile.syscalls
                                  if s.replicas > now.coverage.get(s.name, 0)}),
            )  # fmt: skip
            if left.replicas or left.coverage:
                carried[profile.container] = left

    def containers(self, source: str) -> dict[str, ContainerSyscalls]:
        """Container name → its profile, carried plus reported, by name."""
        return self._merge(self._replicas.get(source, {}).items(),
                           self._carried.get(source, {}))

    @staticmethod
    def _merge(
        replicas: Iterable[tuple[ReplicaKey, Replica]], carried: Mapping[str, ContainerSyscalls]
    ) -> dict[str, ContainerSyscalls]:
        out = {name: ContainerSyscalls(c.replicas, c.start_seen, Counter(c.coverage))
               for name, c in carried.items()}  # fmt: skip
        for (_, container), replica in replicas:
            if replica.names:  # a replica that made no syscall yet adds nothing
                out.setdefault(container, ContainerSyscalls()).add(replica)
        return dict(sorted(out.items()))

    def forget(self, source: str) -> None:
        for table in (self._replicas, self._carried, self._omitted):
            table.pop(source, None)
        self._seeded.discard(source)
