"""The agent's loop, the same for every command: poll the backend, keep the
container bookkeeping (containers and their sub-cgroups, from the scan, mkdir
and rmdir), dispatch enrichment, read syscall counts, and hand all of it to a
`Mode` (what the command does with it: `standalone` prints JSON lines, `run`
traces a NodeTracer's targets and reports).

One turn (`step`): the enrichment answers that arrived → the backend's events
(a new container cgroup is added, an event goes to its container's mode) →
counts, when `counts_every` passed or cgroups went (at most every
REMOVALS_EVERY_S: reading every traced cgroup's counts costs, and under churn
cgroups go all the time) → the removals, after the counts that hold their
final ones (the last cgroup of a container takes the container with it) → a
resync when due → the mode's `tick` → a heartbeat. Nothing in a turn waits on
anything but the backend's poll timeout: CRI lookups run in
`core.enrichment`'s worker.

A resync rescans the kubepods tree, as a watch relists: cgroups whose rmdir
was lost (a full ring buffer) are removed, containers whose mkdir was lost
are added, and containers the runtime could not name (it was down, or slow to
register them) are asked about once more. It runs when the backend reports
dropped events, every `resync_every` seconds, and when asked (`resync_soon`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

from podtrace_api.nodetracer import IdentitySource

from ..backend import Backend, CgroupEvent, Event, KubepodsRootLike
from ..discovery.tree import CgroupTree, FsTree
from ..scan import ContainerCgroup, container_cgroup, scan
from .containers import Container, Containers, Removed
from .enrichment import Enrichment
from .health import Heartbeat

POLL_S = 0.25
REMOVALS_EVERY_S = 1.0
RESYNC_EVERY_S = 60.0
DROPS_EVERY_S = 5.0  # how often the backend's dropped-event count is looked at

Found = Literal["scan", "mkdir"]


class Mode(Protocol):
    """What a command does with what the core sees. Called from the loop only."""

    def added(
        self, container: Container, cgroup: ContainerCgroup, found: Found, traced: bool
    ) -> None:
        """A container cgroup is known (the container's first, or one more); `traced`:
        the backend traces it already (auto-traced at mkdir)."""
        ...

    def enriched(self, container: Container) -> None:
        """`container.identity` has been set."""
        ...

    def event(self, container: Container, event: Event) -> None:
        """A process, open or connect event of one of the container's cgroups."""
        ...

    def counted(self, containers: list[Container]) -> None:
        """Counts were read: `container.syscalls()` is current for each."""
        ...

    def removed(self, removed: Removed) -> None:
        """A cgroup went; `removed.gone`: it was the container's last."""
        ...

    def tick(self, now: float) -> None:
        """End of a turn of the loop (monotonic time)."""
        ...


class Stop:
    """Set by SIGINT/SIGTERM (it is a signal handler) or the deadline."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.signalled = False

    def __call__(self, *_: object) -> None:
        self.signalled = True

    def reached(self) -> bool:
        return self.signalled or (self.deadline is not None and time.monotonic() >= self.deadline)

    def remaining(self) -> float:
        if self.deadline is None:
            return POLL_S
        return max(0.0, min(POLL_S, self.deadline - time.monotonic()))


class Core:
    """The loop's state: the backend, the containers, enrichment, the mode."""

    def __init__(
        self,
        backend: Backend,
        kubepods: KubepodsRootLike,
        mode: Mode,
        *,
        enrichment: Enrichment | None = None,
        skip_container: str | None = None,
        counts_every: float | None = None,
        resync_every: float = RESYNC_EVERY_S,
        heartbeat: Heartbeat | None = None,
        tree: CgroupTree | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.kubepods = kubepods
        self.mode = mode
        self.enrichment = enrichment or Enrichment(None)
        self.containers = Containers(skip_container)
        self.counts_every = counts_every
        self.resync_every = resync_every
        self.heartbeat = heartbeat or Heartbeat()
        self.tree = tree or FsTree(kubepods.cgroup2)
        self.clock = clock
        self.unattributed = 0  # events of cgroups not known as containers'
        self.resyncs = 0
        self._gone: list[int] = []  # removed cgroups waiting for their final counts
        now = clock()
        self._last_counts = now
        self._last_resync = now
        self._last_drops_check = now
        self._dropped = 0
        self._resync_asked = False

    # -- containers ----------------------------------------------------------------
    def scan(self) -> list[ContainerCgroup]:
        """The container cgroups under kubepods now (not added yet)."""
        return list(scan(self.tree, self.kubepods.path))

    def adopt(self, cgroups: list[ContainerCgroup], found: Found = "scan") -> None:
        """Add container cgroups found outside the backend's events."""
        for cgroup in cgroups:
            self._add(cgroup, found, traced=False)

    def _add(self, cgroup: ContainerCgroup, found: Found, traced: bool) -> None:
        added = self.containers.add(cgroup)
        if added is None:
            return
        container = added.container
        if added.new:
            answer = self.enrichment.request(container.container_id, cgroup.path)
            if answer is not None:
                container.identity = answer
        self.mode.added(container, cgroup, found, traced)
        if added.new and container.identity is not None:
            self.mode.enriched(container)

    def _remove(self, cgroup_id: int) -> None:
        removed = self.containers.remove(cgroup_id)
        if removed is None:
            return
        if removed.gone:
            self.enrichment.forget(removed.container.container_id)
        self.mode.removed(removed)

    def take_enrichments(self) -> None:
        """Give the containers the runtime's answers that arrived; tell the mode."""
        for container_id, answer in self.enrichment.done():
            container = self.containers.get(container_id)
            if container is None:
                continue  # gone before the answer came
            container.identity = answer
            self.mode.enriched(container)

    # -- counts --------------------------------------------------------------------
    def read_counts(self) -> None:
        """Read the backend's counts into the containers; tell the mode."""
        self.containers.take_counts(self.backend.syscall_counts())
        self._last_counts = self.clock()
        self.mode.counted(list(self.containers))

    # -- resync --------------------------------------------------------------------
    def settle(self) -> None:
        """Read the counts, then take the removals that waited for them."""
        self.read_counts()
        gone, self._gone = self._gone, []
        for cgroup_id in gone:
            self._remove(cgroup_id)

    def resync(self) -> None:
        """Rescan kubepods: forget cgroups that are gone, add ones not known."""
        present = {c.cgroup_id: c for c in self.scan()}
        gone = [c for c in self.containers.cgroup_ids() if c not in present]
        if gone:
            self._gone.extend(gone)
            self.settle()
        if self.enrichment.asynchronous:
            for container in self.containers:
                identity = container.identity
                if identity is not None and identity.source is not IdentitySource.CRI:
                    self.enrichment.request(container.container_id,
                                            container.cgroups[container.key_cgroup])
        self.adopt([c for c in present.values() if self.containers.of_cgroup(c.cgroup_id)
                    is None], "scan")
        self.resyncs += 1
        self._last_resync = self.clock()

    def resync_soon(self) -> None:
        """Resync at the next turn: e.g. the runtime answers again, so the containers it
        could not name are asked about now, not at the next periodic resync. Safe to
        call from another thread."""
        self._resync_asked = True

    def _resync_due(self, now: float) -> bool:
        if self._resync_asked:
            self._resync_asked = False
            return True
        if now - self._last_resync >= self.resync_every:
            return True
        if now - self._last_drops_check < DROPS_EVERY_S:
            return False
        self._last_drops_check = now
        dropped = self.backend.stats().events_dropped
        lost, self._dropped = dropped > self._dropped, dropped
        return lost

    # -- the loop ------------------------------------------------------------------
    def step(self, timeout: float = POLL_S) -> None:
        """One turn of the loop."""
        self.take_enrichments()
        for event in self.backend.poll(timeout):
            if isinstance(event, CgroupEvent):
                if event.kind == "rmdir":
                    if self.containers.of_cgroup(event.cgroup_id) is not None:
                        self._gone.append(event.cgroup_id)
                else:
                    self._on_mkdir(event)
                continue
            container = self.containers.of_cgroup(event.cgroup_id)
            if container is None:
                self.unattributed += 1
                continue
            self.mode.event(container, event)
        now = self.clock()
        since = now - self._last_counts
        if (self.counts_every is not None and since >= self.counts_every) or (
                self._gone and since >= REMOVALS_EVERY_S):
            self.settle()
        if self._resync_due(now):
            self.resync()
        self.mode.tick(now)
        self.heartbeat.beat(now)

    def _on_mkdir(self, event: CgroupEvent) -> None:
        cgroup = container_cgroup(self.kubepods.path, event.cgroup_id, event.path)
        if cgroup is not None:
            self._add(cgroup, "mkdir", traced=event.traced)

    def run(self, stop: Stop) -> None:
        """Turn until stopped; then take what the backend still holds and the
        last counts (the mode finishes on its own)."""
        try:
            while not stop.reached():
                self.step(stop.remaining())
            self.step(0)
            self.settle()
        finally:
            self.heartbeat.stopped()
