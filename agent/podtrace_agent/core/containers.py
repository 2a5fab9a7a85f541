"""Container bookkeeping: which cgroups belong to which container, and what
each container's syscall counts add up to. Pure: the loop (`core.loop`) feeds
it cgroups found by the scan or by mkdir, their removals, and the backend's
counts.

A container has its own cgroup (the primary, `<qos>/<pod>/<ctr>`) and may have
sub-cgroups below it (crun's `container`, systemd inside a container); all of
them are that container's (`kubepods.is_container_cgroup`). Its counts are the
sum over its cgroups, and what a removed sub-cgroup counted is carried, so a
container's totals never go down. A container goes when its last cgroup goes:
nothing of it is kept.

    containers = Containers()
    added = containers.add(cgroup)          # Added(container, new=True), or None if known
    containers.take_counts(backend.syscall_counts())
    removed = containers.remove(cgroup_id)  # Removed(container, gone=True) for the last one
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..scan import ContainerCgroup


@dataclass(eq=False)
class Container:
    """One container: its cgroups (id → path, relative to the cgroup2 mount) and
    the last cumulative syscall counts of each; `identity` is what enrichment
    said about it (None while the lookup is pending)."""

    container_id: str
    pod_uid: str
    cgroups: dict[int, str] = field(default_factory=dict)
    primary: int | None = None  # the container's own cgroup
    identity: Any = None  # an EnrichmentLike once known (core.enrichment)
    _live: dict[int, dict[int, int]] = field(default_factory=dict)
    _carried: Counter[int] = field(default_factory=Counter)

    @property
    def key_cgroup(self) -> int:
        """The cgroup that stands for the container: its own, or (its own not seen,
        e.g. a lost mkdir) the lowest id of the ones known."""
        if self.primary is not None:
            return self.primary
        return min(self.cgroups) if self.cgroups else 0

    def subgroups(self) -> dict[int, str]:
        """The container's cgroups other than its own."""
        return {c: p for c, p in self.cgroups.items() if c != self.primary}

    def syscalls(self) -> Mapping[int, int]:
        """Syscall nr → calls over every cgroup the container had, cumulative."""
        if not self._carried and len(self._live) <= 1:
            return next(iter(self._live.values()), {})
        total = Counter(self._carried)
        for counts in self._live.values():
            total.update(counts)
        return total


@dataclass(frozen=True)
class Added:
    container: Container
    new: bool  # the container's first cgroup


@dataclass(frozen=True)
class Removed:
    container: Container
    cgroup_id: int
    path: str
    gone: bool  # it was the container's last cgroup: the container is forgotten


class Containers:
    """Every known container, by id and by each of its cgroups."""

    def __init__(self, skip_container: str | None = None) -> None:
        self.skip_container = skip_container  # the agent's own, never tracked
        self._by_cgroup: dict[int, Container] = {}
        self._by_id: dict[str, Container] = {}

    def add(self, cgroup: ContainerCgroup) -> Added | None:
        """Take a container cgroup on; None when it is known already (a scan and a
        mkdir both saw it) or is the agent's own container."""
        identity = cgroup.identity
        cid = identity.container_id
        if cid is None or cid == self.skip_container or cgroup.cgroup_id in self._by_cgroup:
            return None
        container = self._by_id.get(cid)
        new = container is None
        if container is None:
            container = self._by_id[cid] = Container(cid, identity.pod_uid)
        container.cgroups[cgroup.cgroup_id] = cgroup.path
        if not identity.subgroup:
            container.primary = cgroup.cgroup_id
        self._by_cgroup[cgroup.cgroup_id] = container
        return Added(container, new)

    def remove(self, cgroup_id: int) -> Removed | None:
        """The cgroup is gone: its counts are carried by its container, which goes
        with its last cgroup. None for a cgroup not known."""
        container = self._by_cgroup.pop(cgroup_id, None)
        if container is None:
            return None
        path = container.cgroups.pop(cgroup_id)
        gone = not container.cgroups
        if gone:  # its counts and primary stay readable for a last report
            del self._by_id[container.container_id]
            return Removed(container, cgroup_id, path, gone)
        final = container._live.pop(cgroup_id, None)
        if final:
            container._carried.update(final)
        if container.primary == cgroup_id:
            container.primary = None
        return Removed(container, cgroup_id, path, gone)

    def take_counts(self, counts: Mapping[int, Mapping[int, int]]) -> list[Container]:
        """Record the backend's cumulative per-cgroup counts; the containers whose
        counts changed. Cgroups of no known container are ignored."""
        changed: dict[int, Container] = {}
        for cgroup_id, now in counts.items():
            container = self._by_cgroup.get(cgroup_id)
            if container is None or container._live.get(cgroup_id) == now:
                continue
            container._live[cgroup_id] = dict(now)
            changed[id(container)] = container
        return list(changed.values())

    def of_cgroup(self, cgroup_id: int) -> Container | None:
        return self._by_cgroup.get(cgroup_id)

    def get(self, container_id: str) -> Container | None:
        return self._by_id.get(container_id)

    def cgroup_ids(self) -> Iterable[int]:
        return self._by_cgroup.keys()

    def __iter__(self) -> Iterator[Container]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def cgroup_count(self) -> int:
        return len(self._by_cgroup)
