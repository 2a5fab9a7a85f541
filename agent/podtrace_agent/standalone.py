"""`podtrace-agent standalone`: trace every container under kubepods on this
node, with no cluster, and print JSON lines.

    {"type": "environment", ...}   first, once tracing is live: the discovery report
    {"type": "traced", ...}        a container cgroup is traced (found at start or created)
    {"type": "exec"|"exit", ...}   one per process event of a traced container
    {"type": "summary", ...}       one per container at the end (duration, SIGINT, SIGTERM)
    {"type": "stats", ...}         last: events seen and dropped, table usage

The middle is `Session`, plain state with no I/O: which cgroups belong to which
container, the lines to print, the summaries. `run()` is the loop around a
backend; `standalone()` is discovery, backend choice and start-up.

Identity comes from cgroup paths. An enricher (CRI, podtrace_agent.cri) can be
passed to add pod and container names, namespace and image; without one, or
when it fails, lines say `"identity": "cgroup-path"`.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from podtrace_api.nodeconfig import Probe
from podtrace_api.nodetracer import BackendName, IdentitySource
from podtrace_api.syscalls import name_of

from .backend import (
    Backend,
    BackendError,
    BackendOptions,
    CapacityError,
    CgroupEvent,
    Event,
    ExecEvent,
    ExitEvent,
    KubepodsRootLike,
)
from .discovery import BackendReport, DiscoveryReport, discover, fallback
from .discovery.choice import Requested
from .discovery.tree import FsTree
from .identity import parse
from .scan import ContainerCgroup, container_cgroup, scan

PROBES = Probe.SYSCALLS | Probe.EXEC | Probe.EXIT
POLL_S = 0.25

Line = dict[str, Any]


# --- enrichment seam ------------------------------------------------------------------


class EnrichmentLike(Protocol):
    """What an enricher returns (podtrace_agent.cri's Enrichment fits this)."""

    @property
    def source(self) -> IdentitySource | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def pod_name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def container_name(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def sandbox(self) -> bool | None: ...


class EnricherLike(Protocol):
    """Container ID (and cgroup path) → who it is; podtrace_agent.cri's Enricher fits."""

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> EnrichmentLike: ...


def identity_fields(
    container_id: str, cgroup_path: str, enricher: EnricherLike | None
) -> Line:
    """Names from the enricher when it answers from CRI, else the cgroup path's word.

    Never raises: a broken enricher must not stop the trace.
    """
    if enricher is None:
        return {"identity": IdentitySource.CGROUP_PATH.value}
    try:
        found = enricher.lookup(container_id, cgroup_path)
    except Exception as err:
        return {"identity": IdentitySource.CGROUP_PATH.value, "identity_reason": str(err)}
    if found.source != IdentitySource.CRI:
        return {"identity": IdentitySource.CGROUP_PATH.value, "identity_reason": found.reason}
    return {
        "identity": IdentitySource.CRI.value,
        "pod": found.pod_name,
        "namespace": found.namespace,
        "container": found.container_name,
        "image": found.image,
        "sandbox": found.sandbox,
    }


# --- the session: pure state ------------------------------------------------------------


@dataclass
class ContainerState:
    """One container: its cgroups (its own and any sub-cgroups) and what it did."""

    container_id: str
    pod_uid: str
    cgroups: dict[int, str] = field(default_factory=dict)  # cgroup id → path
    primary: int | None = None  # the container's own cgroup (no subgroup)
    execs: Counter[str] = field(default_factory=Counter)


def wall_time(timestamp_ns: int, offset_ns: int) -> str:
    """A backend timestamp (CLOCK_MONOTONIC ns) as UTC RFC 3339 with microseconds."""
    moment = datetime.fromtimestamp((timestamp_ns + offset_ns) / 1e9, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def syscall_name(number: int) -> str:
    """libseccomp's name; numbers beyond the counter table are counted as "other"."""
    return name_of(number) if number >= 0 else "other"


class Session:
    """Which cgroups are traced, for which container, and the lines to print."""

    def __init__(
        self,
        enricher: EnricherLike | None = None,
        skip_container: str | None = None,
        clock_offset_ns: int = 0,
        syscall_names: Callable[[int], str] = syscall_name,
        kubepods: str = "kubepods",
    ) -> None:
        self.kubepods = kubepods  # relative to the cgroup2 mount, like event paths
        self.enricher = enricher
        self.skip_container = skip_container
        self.clock_offset_ns = clock_offset_ns
        self.syscall_names = syscall_names
        self.by_cgroup: dict[int, ContainerState] = {}
        self.containers: dict[str, ContainerState] = {}
        self.unattributed = 0  # events from cgroups not known as containers

    def add(self, cgroup: ContainerCgroup) -> bool:
        """Take a container cgroup on; False if it is known already or is the agent's own."""
        identity = cgroup.identity
        cid = identity.container_id
        if cid is None or cid == self.skip_container or cgroup.cgroup_id in self.by_cgroup:
            return False
        state = self.containers.setdefault(cid, ContainerState(cid, identity.pod_uid))
        state.cgroups[cgroup.cgroup_id] = cgroup.path
        if not identity.subgroup:
            state.primary = cgroup.cgroup_id
        self.by_cgroup[cgroup.cgroup_id] = state
        return True

    def on_cgroup(self, event: CgroupEvent) -> ContainerCgroup | None:
        """A new container cgroup to trace, or None (rmdir, or not a container's)."""
        if event.kind != "mkdir":
            return None
        cgroup = container_cgroup(self.kubepods, event.cgroup_id, event.path)
        return cgroup if cgroup is not None and self.add(cgroup) else None

    def traced_line(self, cgroup: ContainerCgroup, found: str) -> Line:
        identity = cgroup.identity
        assert identity.container_id is not None
        return {
            "type": "traced",
            "container_id": identity.container_id,
            "pod_uid": identity.pod_uid,
            "cgroup_id": cgroup.cgroup_id,
            "path": cgroup.path,
            "qos": identity.qos.value,
            "runtime": identity.runtime.value,
            "found": found,  # "scan" (existed at start) or "mkdir" (created since)
            **identity_fields(identity.container_id, cgroup.path, self.enricher),
        }

    def on_event(self, event: Event) -> Line | None:
        """The line for an exec or exit event (None for other kinds and unknown cgroups)."""
        if not isinstance(event, ExecEvent | ExitEvent):
            return None
        state = self.by_cgroup.get(event.cgroup_id)
        if state is None:
            self.unattributed += 1
            return None
        line: Line = {
            "type": "exec" if isinstance(event, ExecEvent) else "exit",
            "container_id": state.container_id,
            "pod_uid": state.pod_uid,
            "cgroup_id": event.cgroup_id,
            "pid": event.pid,
            "ppid": event.ppid,
            "uid": event.uid,
            "comm": event.comm,
        }
        if isinstance(event, ExecEvent):
            line["filename"] = event.filename
            state.execs[event.filename] += 1
        else:
            line["exit_code"] = event.exit_code
        line["time"] = wall_time(event.timestamp_ns, self.clock_offset_ns)
        path = state.cgroups.get(event.cgroup_id, "")
        line.update(identity_fields(state.container_id, path, self.enricher))
        return line

    def summaries(self, counts: dict[int, dict[int, int]]) -> list[Line]:
        """One line per container: syscall counts by name over all its cgroups, execs."""
        lines = []
        for cid in sorted(self.containers):
            state = self.containers[cid]
            by_name: Counter[str] = Counter()
            for cgroup_id in state.cgroups:
                for number, count in counts.get(cgroup_id, {}).items():
                    by_name[self.syscall_names(number)] += count
            primary = state.primary if state.primary is not None else min(state.cgroups)
            lines.append({
                "type": "summary",
                "container_id": cid,
                "pod_uid": state.pod_uid,
                "cgroup_id": primary,
                "syscalls": dict(sorted(by_name.items())),
                "syscalls_total": sum(by_name.values()),
                "execs": [
                    {"filename": name, "count": n}
                    for name, n in sorted(state.execs.items(), key=lambda kv: (-kv[1], kv[0]))
                ],
                **identity_fields(cid, state.cgroups[primary], self.enricher),
            })
        return lines


# --- the loop around a backend ----------------------------------------------------------


class Output:
    """JSON lines to a stream, flushed per line (a pipe reader sees each at once)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, line: Line) -> None:
        self.stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.stream.flush()


class Stop:
    """Set by SIGINT/SIGTERM or the deadline."""

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


def trace_all(
    backend: Backend, session: Session, cgroups: Iterable[ContainerCgroup], found: str,
    emit: Callable[[Line], None], problems: list[str],
) -> None:
    """trace() each new container cgroup; a full table is reported, not fatal."""
    for cgroup in cgroups:
        if not session.add(cgroup):
            continue
        _trace_one(backend, session, cgroup, found, emit, problems)


def _trace_one(
    backend: Backend, session: Session, cgroup: ContainerCgroup, found: str,
    emit: Callable[[Line], None], problems: list[str],
) -> None:
    try:
        backend.trace(cgroup.cgroup_id, cgroup.path, PROBES)
    except CapacityError as err:
        problems.append(f"{cgroup.path} not traced: {err}")
        return
    emit(session.traced_line(cgroup, found))


def run(
    backend: Backend,
    session: Session,
    emit: Callable[[Line], None],
    stop: Stop,
    problems: list[str],
) -> None:
    """Poll until stopped, tracing container cgroups as they appear; then summarise."""
    while not stop.reached():
        for event in backend.poll(stop.remaining()):
            if isinstance(event, CgroupEvent):
                cgroup = session.on_cgroup(event)
                if cgroup is not None:
                    _trace_one(backend, session, cgroup, "mkdir", emit, problems)
                continue
            line = session.on_event(event)
            if line is not None:
                emit(line)
    for event in backend.poll(0):  # what is already buffered belongs to the trace
        line = session.on_event(event) if not isinstance(event, CgroupEvent) else None
        if line is not None:
            emit(line)
    for line in session.summaries(backend.syscall_counts()):
        emit(line)
    stats = backend.stats()
    emit({
        "type": "stats",
        "backend": backend.name,
        "events_seen": stats.events_seen,
        "events_dropped": stats.events_dropped,
        "untraced_for_capacity": stats.untraced_for_capacity,
        "unattributed_events": session.unattributed,
        "maps": [{"name": m.name, "used": m.used, "capacity": m.capacity} for m in stats.maps],
        "problems": problems,
    })


def make_backend(
    name: BackendName, kubepods: KubepodsRootLike, tracefs: str, *, max_traced: int = 512,
    ringbuf_pages: int = 256,
) -> Backend:
    """The backend `name`, constructed (not started). New container cgroups are
    traced by the backend itself from their creation (auto_trace_mask). The table
    sizes are the agent's flags (README: Limits)."""
    options = BackendOptions(auto_trace_mask=PROBES, max_traced=max_traced)
    if name is BackendName.BCC:
        from .bpf.loader import BccBackend

        return BccBackend(kubepods, options, ringbuf_pages=ringbuf_pages)
    if name is BackendName.FTRACE:
        from .ftrace.backend import FtraceBackend

        return FtraceBackend(kubepods, options, tracefs=Path(tracefs) if tracefs else None)
    raise BackendError("no backend")


def start_backend(
    report: DiscoveryReport,
    requested: Requested,
    kubepods: KubepodsRootLike,
    make: Callable[[BackendName, KubepodsRootLike, str], Backend] = make_backend,
) -> tuple[Backend | None, DiscoveryReport]:
    """Start the chosen backend; with auto, fall back to ftrace if bcc fails to start
    (a compile or verifier error is only seen here). The report comes back with
    the backend that really runs and why."""
    choice = report.backend
    while choice.name is not BackendName.NONE:
        try:
            backend = make(choice.name, kubepods, report.kernel.tracefs)
            backend.start()
        except BackendError as err:
            if choice.name is BackendName.BCC:
                choice = fallback(requested, str(err), report.kernel.tracefs)
            else:
                choice = BackendReport(BackendName.NONE, f"{choice.name} failed to start: {err}")
            continue
        return backend, replace(report, backend=choice)
    return None, replace(report, backend=choice)


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
) -> int:
    """The whole command: 0 after a clean trace, 1 when tracing cannot start."""
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
    try:
        running, report = start_backend(report, backend, root)
        if running is None:
            emit(environment_line(report, 0))
            print(f"podtrace-agent: {report.backend.reason}", file=err)
            return 1
        try:
            trace(running, report, root, emit, stop, duration, enricher)
        finally:
            running.close()
    except BrokenPipeError:
        return 0  # the reader went away (| head): nothing left to say
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def trace(
    backend: Backend,
    report: DiscoveryReport,
    root: KubepodsRootLike,
    emit: Callable[[Line], None],
    stop: Stop,
    duration: float | None,
    enricher: EnricherLike | None,
) -> None:
    """Scan, trace what is there, print the environment, and run until stopped."""
    own = parse(report.agent_cgroup) if report.agent_cgroup else None
    session = Session(
        enricher=enricher,
        skip_container=own.container_id if own else None,
        clock_offset_ns=time.time_ns() - time.monotonic_ns(),
        kubepods=root.path,
    )
    # Scan after start: a container created in between is both scanned and
    # reported by mkdir; Session.add() keeps the first.
    existing = list(scan(FsTree(root.cgroup2), root.path))
    emit(environment_line(report, len(existing)))
    problems: list[str] = []
    trace_all(backend, session, existing, "scan", emit, problems)
    stop.deadline = None if duration is None else time.monotonic() + duration
    run(backend, session, emit, stop, problems)
