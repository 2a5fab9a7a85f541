"""`podtrace-agent standalone`: trace every container under kubepods on this
node, with no cluster, and print JSON lines.

    {"type": "environment", ...}   first, once tracing is live: the discovery report
    {"type": "traced", ...}        a container cgroup is traced (found at start or created)
    {"type": "exec"|"exit", ...}   one per process event of a traced container
    {"type": "summary", ...}       one per container: when it goes, or at the end
                                   (duration, SIGINT, SIGTERM) for those still there
    {"type": "stats", ...}         last: events seen and dropped, table usage

A thin shell over `core`: discovery, backend start-up and the loop are the
core's; `Lines` is this command's `Mode`, the lines to print. Every container
cgroup is traced (sub-cgroups too: a summary adds a container's cgroups up).

Identity comes from cgroup paths. An enricher (CRI, podtrace_agent.cri) adds pod
and container names, namespace and image: the core asks it off the loop, and a
container's lines wait for its answer (a second or two at most), so each line
carries it. Without one, or when it cannot tell, lines say
`"identity": "cgroup-path"` and why.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from typing import TextIO

from podtrace_api.nodetracer import IdentitySource
from podtrace_api.syscalls import name_of

from .backend import Backend, CapacityError, Event, ExecEvent, ExitEvent
from .bpf.pins import PIN_ROOT, instance_name
from .core import (
    AUTO_PROBES,
    Container,
    Core,
    EnricherLike,
    Enrichment,
    EnrichmentLike,
    Found,
    Line,
    Output,
    Removed,
    Stop,
    make_backend,
    start_backend,
    wall_time,
)
from .discovery import DiscoveryReport, discover
from .discovery.choice import Requested
from .identity import parse
from .scan import ContainerCgroup

PROBES = AUTO_PROBES  # every container cgroup is traced with what auto-tracing uses
HELD_LINES = 1024  # per container, while its identity is being looked up
FINISH_WAIT_S = 2.0  # at the end, for identities still being looked up
PENDING = "CRI lookup still pending"


def identity_fields(found: EnrichmentLike | None) -> Line:
    """Names when the runtime (CRI) answered, else the cgroup path's word and why.

    >>> identity_fields(None)
    {'identity': 'cgroup-path', 'identity_reason': 'CRI lookup still pending'}
    """
    if found is None:
        return {"identity": IdentitySource.CGROUP_PATH.value, "identity_reason": PENDING}
    if found.source != IdentitySource.CRI:
        fields: Line = {"identity": IdentitySource.CGROUP_PATH.value}
        if found.reason:
            fields["identity_reason"] = found.reason
        return fields
    return {
        "identity": IdentitySource.CRI.value,
        "pod": found.pod_name,
        "namespace": found.namespace,
        "container": found.container_name,
        "image": found.image,
        "sandbox": found.sandbox,
    }


def syscall_name(number: int) -> str:
    """libseccomp's name; numbers beyond the counter table are counted as "other"."""
    return name_of(number) if number >= 0 else "other"


class Lines:
    """The standalone Mode: trace every container cgroup, print what it did."""

    def __init__(
        self,
        backend: Backend,
        emit: Callable[[Line], None],
        *,
        clock_offset_ns: int = 0,
        syscall_names: Callable[[int], str] = syscall_name,
    ) -> None:
        self.backend = backend
        self.emit = emit
        self.clock_offset_ns = clock_offset_ns
        self.syscall_names = syscall_names
        self.problems: list[str] = []
        self._held: dict[str, deque[Line]] = {}  # container id → lines awaiting identity
        self._execs: dict[str, Counter[str]] = {}  # container id → filename → execs

    # -- the Mode ------------------------------------------------------------------
    def added(
        self, container: Container, cgroup: ContainerCgroup, found: Found, traced: bool
    ) -> None:
        if not traced:  # auto-traced at mkdir with PROBES already, else traced here
            try:
                self.backend.trace(cgroup.cgroup_id, cgroup.path, PROBES)
            except CapacityError as err:  # a full table is reported, not fatal
                self.problems.append(f"{cgroup.path} not traced: {err}")
                return
        identity = cgroup.identity
        self._say(container, {
            "type": "traced",
            "container_id": container.container_id,
            "pod_uid": identity.pod_uid,
            "cgroup_id": cgroup.cgroup_id,
            "path": cgroup.path,
            "qos": identity.qos.value,
            "runtime": identity.runtime.value,
            "found": found,  # "scan" (existed at start) or "mkdir" (created since)
        })

    def enriched(self, container: Container) -> None:
        for line in self._held.pop(container.container_id, ()):
            self.emit({**line, **identity_fields(container.identity)})

    def event(self, container: Container, event: Event) -> None:
        if not isinstance(event, ExecEvent | ExitEvent):
            return
        line: Line = {
            "type": "exec" if isinstance(event, ExecEvent) else "exit",
            "container_id": container.container_id,
            "pod_uid": container.pod_uid,
            "cgroup_id": event.cgroup_id,
            "pid": event.pid,
            "ppid": event.ppid,
            "uid": event.uid,
            "comm": event.comm,
        }
        if isinstance(event, ExecEvent):
            line["filename"] = event.filename
            self._execs.setdefault(container.container_id, Counter())[event.filename] += 1
        else:
            line["exit_code"] = event.exit_code
        line["time"] = wall_time(event.timestamp_ns, self.clock_offset_ns)
        self._say(container, line)

    def counted(self, containers: list[Container]) -> None:
        pass  # summaries read container.syscalls() when they are printed

    def removed(self, removed: Removed) -> None:
        if removed.gone:
            self.summarise(removed.container)

    def tick(self, now: float) -> None:
        pass

    # -- lines ---------------------------------------------------------------------
    def _say(self, container: Container, line: Line) -> None:
        if container.identity is not None:
            self.emit({**line, **identity_fields(container.identity)})
            return
        held = self._held.setdefault(container.container_id, deque())
        held.append(line)
        if len(held) > HELD_LINES:
            self.emit({**held.popleft(), **identity_fields(None)})

    def summarise(self, container: Container) -> None:
        """The container's summary: syscall counts by name over all its cgroups, execs.
        Everything kept about it goes."""
        cid = container.container_id
        for line in self._held.pop(cid, ()):
            self.emit({**line, **identity_fields(container.identity)})
        by_name: Counter[str] = Counter()
        for number, count in container.syscalls().items():
            by_name[self.syscall_names(number)] += count
        execs = self._execs.pop(cid, Counter())
        self.emit({
            "type": "summary",
            "container_id": cid,
            "pod_uid": container.pod_uid,
            "cgroup_id": container.key_cgroup,
            "syscalls": dict(sorted(by_name.items())),
            "syscalls_total": sum(by_name.values()),
            "execs": [
                {"filename": name, "count": n}
                for name, n in sorted(execs.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            **identity_fields(container.identity),
        })

    def finish(self, core: Core) -> None:
        """The end: a summary for every container still there, then the stats."""
        for container in sorted(core.containers, key=lambda c: c.container_id):
            self.summarise(container)
        stats = self.backend.stats()
        self.emit({
            "type": "stats",
            "backend": self.backend.name,
            "events_seen": stats.events_seen,
            "events_dropped": stats.events_dropped,
            "untraced_for_capacity": stats.untraced_for_capacity,
            "unattributed_events": core.unattributed,
            "maps": [{"name": m.name, "used": m.used, "capacity": m.capacity}
                     for m in stats.maps],
            "problems": self.problems,
        })

    @property
    def held(self) -> int:
        """Lines waiting for an identity (for tests and the churn check)."""
        return sum(len(h) for h in self._held.values())


def environment_line(report: DiscoveryReport, containers: int) -> Line:
    return {"type": "environment", **report.to_json(), "containers_at_start": containers}


def standalone(
    *,
    duration: float | None,
    backend: Requested = "auto",
    cgroupfs: str | None = None,
    kubepods: str | None = None,
    allow_mount: bool | None = None,
    enricher: EnricherLike | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    pin_instance: str | None = None,
) -> int:
    """The whole command: 0 after a clean trace, 1 when tracing cannot start.

    With `pin_instance`, bcc's maps and links are pinned while it traces: after a
    kill -9 the next standalone trace of that instance goes on with what the
    kernel kept counting (its summaries count from the first run's start). Any
    other end removes the pins: the trace is over."""
    emit = Output(out)
    report = discover(
        cgroupfs=cgroupfs, kubepods=kubepods, backend=backend, allow_mount=allow_mount
    )
    root = report.cgroup.kubepods()
    if report.fatal or root is None:
        emit(environment_line(report, 0))
        for problem in report.fatal:
            print(f"podtrace-agent: {problem.message}", file=err)
        return 1

    # Handlers first: a SIGINT during BCC's compile then ends the trace at once,
    # with its (empty) summaries, rather than with a traceback.
    stop = Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    enrichment = Enrichment(enricher)
    try:
        make = make_backend
        if pin_instance is not None:
            make = partial(make_backend, pin_dir=PIN_ROOT / instance_name(pin_instance),
                           allow_mount=allow_mount is not False)
        running, report = start_backend(report, backend, root, make)
        if running is None:
            emit(environment_line(report, 0))
            print(f"podtrace-agent: {report.backend.reason}", file=err)
            return 1
        try:
            for line in resume_lines(running):
                print(f"podtrace-agent: {line}", file=err)
            trace(running, report, emit, stop, duration, enrichment)
        finally:
            unpin = getattr(running, "unpin", None)
            if unpin is not None:
                unpin()
            running.close()
    except BrokenPipeError:
        return 0  # the reader went away (| head): nothing left to say
    finally:
        enrichment.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def resume_lines(backend: Backend) -> list[str]:
    """What a pinned bcc backend found at start, for the log."""
    resume = getattr(backend, "resume", None)
    if resume is None or not resume.layout:
        return list(resume.problems) if resume is not None else []
    lines = [*resume.problems, *resume.stale]
    if resume.found:
        lines.append(f"resumed the pinned maps of layout {resume.layout} (start "
                     f"{resume.starts}; {resume.entries} traced cgroups; programs "
                     f"{'still attached' if resume.adopted else 'attached again'}; "
                     f"{resume.orphaned_rows} rows freed)")
    return lines


def trace(
    backend: Backend,
    report: DiscoveryReport,
    emit: Callable[[Line], None],
    stop: Stop,
    duration: float | None,
    enrichment: Enrichment,
) -> Core:
    """Scan, trace what is there, print the environment, and run until stopped."""
    root = report.cgroup.kubepods()
    assert root is not None
    own = parse(report.agent_cgroup) if report.agent_cgroup else None
    lines = Lines(backend, emit, clock_offset_ns=time.time_ns() - time.monotonic_ns())
    core = Core(backend, root, lines, enrichment=enrichment,
                skip_container=own.container_id if own else None)
    # Scan after start: a container created in between is both scanned and
    # reported by mkdir; the core keeps the first.
    existing = core.scan()
    emit(environment_line(report, len(existing)))
    core.adopt(existing)
    stop.deadline = None if duration is None else time.monotonic() + duration
    core.run(stop)
    enrichment.wait(FINISH_WAIT_S)
    core.take_enrichments()
    lines.finish(core)
    return core
