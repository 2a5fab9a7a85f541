"""The core's loop over a scripted backend and a real directory tree as the
cgroup hierarchy: removals wait for the counts that hold their final numbers,
a resync (lost events) forgets cgroups that are gone and adds ones never
announced, and containers the runtime could not name are asked about again."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podtrace_agent.backend import BackendStats, CgroupEvent, Event, KubepodsRoot
from podtrace_agent.core import Container, Core, Enrichment, Found, Removed
from podtrace_agent.scan import ContainerCgroup
from podtrace_api.nodetracer import IdentitySource

UID = "11111111-2222-4333-8444-555555555555"
A, B = "a" * 64, "b" * 64
POD = f"kubepods/besteffort/pod{UID}"


@dataclass
class Backend:
    events: list[Event] = field(default_factory=list)
    counts: dict[int, dict[int, int]] = field(default_factory=dict)
    dropped: int = 0
    reads: int = 0

    def poll(self, timeout: float) -> list[Event]:
        events, self.events = self.events, []
        return events

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        self.reads += 1
        return self.counts

    def stats(self) -> BackendStats:
        return BackendStats(0, self.dropped)


@dataclass
class Recorder:
    """A Mode that writes down what it is told."""

    seen: list[tuple[str, Any]] = field(default_factory=list)

    def added(self, container: Container, cgroup: ContainerCgroup, found: Found,
              traced: bool) -> None:
        self.seen.append(("added", (cgroup.cgroup_id, found)))

    def enriched(self, container: Container) -> None:
        self.seen.append(("enriched", container.identity.source))

    def event(self, container: Container, event: Event) -> None:
        self.seen.append(("event", event.cgroup_id))

    def counted(self, containers: list[Container]) -> None:
        pass

    def removed(self, removed: Removed) -> None:
        self.seen.append(("removed", (removed.cgroup_id, removed.gone,
                                      dict(removed.container.syscalls()))))

    def tick(self, now: float) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def core(tmp_path: Path, enricher: Any = None) -> tuple[Core, Backend, Recorder, Clock]:
    backend, mode, clock = Backend(), Recorder(), Clock()
    (tmp_path / "kubepods").mkdir()
    root = KubepodsRoot.at(tmp_path, "kubepods")
    return (Core(backend, root, mode, enrichment=Enrichment(enricher), clock=clock,  # type: ignore[arg-type]
                 resync_every=60.0), backend, mode, clock)


def test_a_removal_waits_for_the_counts_that_hold_its_final_numbers(tmp_path: Path) -> None:
    c, backend, mode, clock = core(tmp_path)
    backend.events = [CgroupEvent("mkdir", 10, 4, f"/{POD}/{A}", 0)]
    c.step(0)
    backend.events = [CgroupEvent("rmdir", 10, 4, f"/{POD}/{A}", 0)]
    c.step(0)
    backend.events = [CgroupEvent("rmdir", 99, 4, f"/{POD}/{B}", 0)]  # never known: ignored
    c.step(0)
    assert backend.reads == 0 and len(c.containers) == 1  # counts read at most every second
    backend.counts = {10: {0: 5}}  # the backend keeps a removed cgroup's last counts
    clock.now += 1.0
    c.step(0)
    assert backend.reads == 1 and mode.seen[-1] == ("removed", (10, True, {0: 5}))
    assert len(c.containers) == 0


def test_a_resync_repairs_lost_mkdirs_and_rmdirs(tmp_path: Path) -> None:
    c, backend, mode, clock = core(tmp_path)
    announced = tmp_path / POD / A
    announced.mkdir(parents=True)
    backend.events = [CgroupEvent("mkdir", os.stat(announced).st_ino, 4, f"/{POD}/{A}", 0)]
    c.step(0)
    unannounced = tmp_path / POD / B
    unannounced.mkdir()  # its mkdir event lost
    announced.rmdir()  # its rmdir event lost (after: a new directory may reuse an inode)
    backend.dropped = 2
    clock.now += 5.0  # the backend's dropped count is looked at every 5 s
    c.step(0)
    assert c.resyncs == 1
    assert [k for k, _ in mode.seen] == ["added", "enriched", "removed", "added", "enriched"]
    assert mode.seen[-2] == ("added", (os.stat(unannounced).st_ino, "scan"))
    assert [x.container_id for x in c.containers] == [B]
    clock.now += 5.0
    c.step(0)
    assert c.resyncs == 1  # no new loss, not due yet
    clock.now += 60.0
    c.step(0)
    assert c.resyncs == 2  # due anyway


@dataclass(frozen=True)
class Answer:
    source: IdentitySource
    reason: str = ""
    pod_name: str = "web-0"
    namespace: str = "shop"
    container_name: str = "app"
    image: str = "busybox"
    sandbox: bool | None = False


class Runtime:
    """Down at first, then up."""

    def __init__(self) -> None:
        self.up = False

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> Answer:
        if self.up:
            return Answer(IdentitySource.CRI)
        return Answer(IdentitySource.CGROUP_PATH, "runtime unreachable")


def test_containers_the_runtime_could_not_name_are_asked_again(tmp_path: Path) -> None:
    runtime = Runtime()
    c, backend, mode, clock = core(tmp_path, runtime)
    c.enrichment.retry_delays = ()
    backend.events = [CgroupEvent("mkdir", 10, 4, f"/{POD}/{A}", 0)]
    c.step(0)
    assert c.enrichment.wait(10)
    c.step(0)
    assert mode.seen[-1] == ("enriched", IdentitySource.CGROUP_PATH)
    runtime.up = True
    (tmp_path / POD / A).mkdir(parents=True)  # still there at the resync
    clock.now += 60.0
    c.step(0)
    assert c.enrichment.wait(10)
    c.step(0)
    assert mode.seen[-1] == ("enriched", IdentitySource.CRI)
    c.enrichment.close()
