"""`podtrace-agent run`: the node agent in a cluster, a thin shell over `core`.

A straight line: discover the node → find the runtime → start the backend →
watch this node's NodeTracer and Pods → the core's loop, with `Agent` as its
`Mode`: attribute events to targets, program the backend as the spec and the
pods change, raise Events for rule matches, report status and metrics. One
cleanup path.

A container's sub-cgroups follow it: they are traced with what its own cgroup
is traced with (or untraced with it), and their events and counts are the
container's.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from podtrace_api.base import Condition, ConditionStatus
from podtrace_api.conditions import get_condition
from podtrace_api.nodetracer import NodeTracerSpec, SeccompInstallStatus
from podtrace_api.seccompinstall import INSTALL_NAMESPACE

from ..backend import Backend, Event, ExecEvent, ExitEvent, OpenEvent
from ..bpf.pins import PIN_ROOT, instance_name
from ..core import (
    Container,
    Containers,
    Core,
    Enrichment,
    Found,
    Heartbeat,
    Output,
    Removed,
    Stop,
    make_backend,
    start_backend,
    wall_time,
)
from ..cri.endpoints import RuntimeReport
from ..cri.enrich import Enricher
from ..cri.runtime import discover_runtime
from ..cri.watch import RuntimeWatch
from ..discovery import DiscoveryReport, discover
from ..discovery.choice import Requested
from ..scan import ContainerCgroup
from ..standalone import resume_lines
from .apply import apply_request, remove
from .eventlimit import EventLimiter, Series
from .kube import REQUEST_TIMEOUT_S, Kube, load_config
from .metrics import AgentMetrics
from .plan import CgroupRef, TraceRequest, pod_view
from .rules import Match
from .seccompdir import SeccompDir, not_installing, wanted
from .sender import Sender
from .serving import serve
from .state import KnownCgroup, NodeState, Observation
from .status import Health, node_status
from .writer import HEARTBEAT_S, StatusWriter

log = logging.getLogger(__name__)
COUNTS_EVERY_S = 1.0  # counts read, plan checked, events and status offered
INSTALL_RETRY_S = 10.0  # a profile file that could not be written is tried again
CAPTURES_KEPT = 8  # statuses built and maybe not written yet (a write takes the latest)


@dataclass(frozen=True)
class AgentOptions:
    node: str
    kubeconfig: str | None = None
    backend: Requested = "auto"
    cgroupfs: str | None = None
    kubepods: str | None = None
    allow_mount: bool | None = None
    runtime_endpoints: tuple[str, ...] = ()
    host_root: str | None = None
    metrics_port: int = 9465
    status_interval: float = 5.0
    heartbeat_interval: float = HEARTBEAT_S
    event_interval: float = 30.0
    json_events: bool = True
    max_traced: int = 512  # traced map entries = counter rows
    ringbuf_pages: int = 256  # bcc ring buffer, a power of two
    stall_timeout: float = 30.0  # /healthz fails when the loop has not turned for this long
    # bcc: pin maps and links under /sys/fs/bpf/podtrace/<this> (None: no pins)
    pin_instance: str | None = None
    namespace: str | None = None  # the agent's own: terminating means uninstall
    seccomp_dir: str | None = None  # the kubelet's seccomp dir: install profiles there
    install_namespace: str = INSTALL_NAMESPACE  # where the operator publishes them


def _marked_silent_since(stored: list[Condition], ours: list[Condition]) -> bool:
    """Whether the stored Ready is Unknown, set after our own Ready's last transition
    (an older watch event carrying it, after we wrote Ready again, is not)."""
    theirs, mine = get_condition(stored, "Ready"), get_condition(ours, "Ready")
    return theirs is not None and theirs.status == ConditionStatus.UNKNOWN and (
        mine is None or theirs.last_transition_time > mine.last_transition_time)


def _agent_version() -> str:
    try:
        return version("podtrace")
    except PackageNotFoundError:  # pragma: no cover - source tree
        return "unknown"


@dataclass
class Agent:
    """The cluster Mode of the core: the node's state and its edges to the API."""

    options: AgentOptions
    report: DiscoveryReport
    backend: Backend
    kube: Kube
    metrics: AgentMetrics
    runtime_report: RuntimeReport
    emit: Output
    runtime_watch: RuntimeWatch | None = None  # the runtime now (else: as at start)
    containers: Containers = field(default_factory=Containers)  # the core's
    state: NodeState = field(default_factory=NodeState)
    inbox: queue.Queue[tuple[str, str, dict[str, Any]]] = field(default_factory=queue.Queue)
    conditions: list[Condition] = field(default_factory=list)
    _dirty: bool = True
    _offset_ns: int = field(default_factory=lambda: time.time_ns() - time.monotonic_ns())

    def __post_init__(self) -> None:
        self._captures: dict[int | None, Any] = {}  # status tag → backend capture
        self._resumed = False
        self.limiter = EventLimiter(interval=self.options.event_interval)
        self.writer = StatusWriter(self._send_status, interval=self.options.status_interval,
                                   heartbeat=self.options.heartbeat_interval)
        self.sender = Sender(self.writer)  # every apiserver write, off the loop
        self._writing: dict[tuple[str, str, str], tuple[Series, int, float, str]] = {}
        self._first_seen: dict[tuple[str, str, str], datetime] = {}
        # What the backend holds for each container's own cgroup (None: untraced), so
        # its sub-cgroups can follow; absent: not decided yet.
        self._holds: dict[int, TraceRequest | None] = {}
        self._last_second = float("-inf")
        # Seccomp profiles to install: the install ConfigMaps by name, as last listed.
        self.seccomp = (SeccompDir(Path(self.options.seccomp_dir))
                        if self.options.seccomp_dir else None)  # fmt: skip
        self._install_maps: dict[str, dict[str, Any]] = {}
        self._install_due: float | None = None  # when to sync the directory next
        self.installs: SeccompInstallStatus = not_installing(
            "the agent runs without --seccomp-dir: it installs no profile")
        if self.seccomp is not None:  # nothing written yet (no message: not a failure)
            self.installs = SeccompInstallStatus(directory=str(self.seccomp.directory))

    # -- inputs --------------------------------------------------------------------
    def inbox_handlers(self, what: str) -> Any:
        """The watch callbacks that queue `what`'s events for the loop."""

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            self.inbox.put((what, kind, obj))

        def on_sync(items: list[dict[str, Any]]) -> None:
            self.inbox.put((what, "SYNC", {"items": items}))

        def on_error(message: str) -> None:
            self.inbox.put((what, "ERROR", {"message": message}))

        return on_event, on_sync, on_error

    def _take_node_tracer(self, obj: dict[str, Any]) -> None:
        spec = NodeTracerSpec.model_validate(obj.get("spec") or {})
        self.state.set_spec(spec, obj.get("metadata", {}).get("generation", 0))
        raw = (obj.get("status") or {}).get("conditions") or []
        stored = [Condition.model_validate(c) for c in raw]
        # Keep transition times across agent restarts; and take the operator's Ready
        # Unknown (it found this agent silent, e.g. while its process was stopped), so
        # the next write's Ready=True starts a new transition.
        if not self.conditions or _marked_silent_since(stored, self.conditions):
            self.conditions = stored

    def _drain_inbox(self) -> None:
        while True:
            try:
                what, kind, obj = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._dirty = True
            if what == "seccomp" and kind == "ERROR":
                self._install_watch_failed(obj["message"])
            elif what == "seccomp":
                self._take_install_map(kind, obj)
            elif what == "nodetracer":
                items = obj["items"] if kind == "SYNC" else [obj]
                self._resume(items if kind != "DELETED" else [])
                if kind == "DELETED":
                    self.state.set_spec(NodeTracerSpec(), 0)
                for item in items if kind != "DELETED" else []:
                    self._take_node_tracer(item)
            elif kind == "SYNC":  # a relist: pods deleted meanwhile go now
                before = set(self.state.pods)
                self.state.pods = {}
                for item in obj["items"]:
                    self.state.set_pod(pod_view(item))
                for uid in before - set(self.state.pods):
                    self._forget_pod(uid)
            elif kind == "DELETED":
                view = pod_view(obj)
                self.state.delete_pod(view.uid)
                self._forget_pod(view.uid)
            else:
                self.state.set_pod(pod_view(obj))

    def _take_install_map(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "SYNC":
            self._install_maps = {i["metadata"]["name"]: i for i in obj["items"]}
        elif kind == "DELETED":
            self._install_maps.pop(obj["metadata"]["name"], None)
        else:
            self._install_maps[obj["metadata"]["name"]] = obj
        self._install_due = 0.0

    def _install_watch_failed(self, why: str) -> None:
        """The install ConfigMaps cannot be listed (no Role there: 403): what is on disk
        stays, and the status says why nothing changes."""
        if self.seccomp is not None and self.installs.message != why[:128]:
            self.installs = self.installs.model_copy(update={"message": why[:128]})
            self._dirty = True

    def _install(self, now: float) -> None:
        """Make the seccomp directory hold the install ConfigMaps' profiles (when they
        changed, and again a while after a failure). Nothing here stops the agent."""
        if self.seccomp is None or self._install_due is None or now < self._install_due:
            return
        try:
            installs = self.seccomp.sync(wanted(self._install_maps.values()))
        except Exception as err:  # a profile the checks missed must not stop the tracing
            log.exception("seccomp profiles not installed")
            installs = self.installs.model_copy(update={"message": f"not installed: {err}"[:128]})
        if installs.failed:
            for failure in installs.failed:
                log.warning("seccomp profiles of trace %s not installed: %s", failure.uid,
                            failure.message)
        self._install_due = now + INSTALL_RETRY_S if installs.failed or installs.message \
            else None
        if installs != self.installs:
            self.installs = installs
            self._dirty = True

    def _forget_pod(self, uid: str) -> None:
        """Everything the event series of a pod that is gone kept."""
        self.limiter.forget_pod(uid)
        for key in [k for k in self._first_seen if k[0] == uid]:
            del self._first_seen[key]

    # -- the Mode: what the core saw -------------------------------------------------
    def added(
        self, container: Container, cgroup: ContainerCgroup, found: Found, traced: bool
    ) -> None:
        if container.primary != cgroup.cgroup_id:
            self._follow(container, cgroup.cgroup_id, cgroup.path)
            return
        identity = container.identity
        self.state.add_cgroup(KnownCgroup(
            ref=CgroupRef(cgroup.cgroup_id, cgroup.path),
            container_id=container.container_id,
            pod_uid=container.pod_uid,
            container_name=identity.container_name if identity is not None else "",
            sandbox=bool(identity.sandbox) if identity is not None else False,
            first_seen=time.monotonic(),
            from_start=found == "mkdir" and traced,
        ))
        self._dirty = True

    def enriched(self, container: Container) -> None:
        known = self.state.cgroups.get(container.primary or 0)
        identity = container.identity
        if known is None or identity is None:
            return
        self.state.add_cgroup(replace(known, container_name=identity.container_name,
                                      sandbox=bool(identity.sandbox)))
        self._dirty = True

    def event(self, container: Container, event: Event) -> None:
        primary = container.primary
        if primary is not None and event.cgroup_id != primary:
            event = replace(event, cgroup_id=primary)  # a sub-cgroup's is its container's
        obs = self.state.on_event(event, datetime.now(UTC))
        if obs is not None:
            self._observe(obs)

    def counted(self, containers: list[Container]) -> None:
        ours = [c for c in containers if c.primary is not None and c.primary in self.state.cgroups]
        lost = self.backend.stats().lost  # by cgroup: a container's are its cgroups'
        counts = {c.primary: c.syscalls() for c in ours}
        lost_of = {c.primary: sum(lost.get(g, 0) for g in c.cgroups) for c in ours}
        for key, match in self.state.on_counts(counts, lost_of):
            self._matched(key, match)
        self.state.on_workload(counts, self.backend.markers())

    def removed(self, removed: Removed) -> None:
        ids = {removed.cgroup_id}
        if removed.gone and removed.container.primary is not None:
            ids.add(removed.container.primary)
        for cgroup_id in ids:
            self._holds.pop(cgroup_id, None)
            if cgroup_id in self.state.cgroups:
                self.state.remove_cgroup(cgroup_id)
                self._dirty = True

    def tick(self, now: float) -> None:
        self._drain_inbox()
        self._install(now)
        second = now - self._last_second >= COUNTS_EVERY_S
        if self._dirty or second:  # each second too: ends the grace of unclaimed cgroups
            self._dirty = False
            self._apply_plan()
        if second:
            self._last_second = now
            self._write_events(now)
            self._report()

    def finish(self, flush: float = REQUEST_TIMEOUT_S + 1) -> None:
        """The last status, written at once (waited for up to `flush` seconds)."""
        self.writer.interval = 0
        self._report()
        self.sender.close(flush)

    # -- sub-cgroups follow their container ------------------------------------------
    def _follow(self, container: Container, cgroup_id: int, path: str) -> None:
        """Give a sub-cgroup what its container's own cgroup holds (when decided)."""
        if container.primary is None or container.primary not in self._holds:
            return  # not decided yet: auto-traced (mkdir) or untraced (scan) until it is
        request = self._holds[container.primary]
        if request is None:
            remove(self.backend, cgroup_id)
            return
        outcome = apply_request(self.backend, cgroup_id, replace(request, path=path),
                                self.state.sources)
        if outcome.rejected:
            log.warning("sub-cgroup %s of %s: %s not applied", path,
                        container.container_id[:13], ", ".join(sorted(outcome.rejected)))

    def _hold(self, cgroup_id: int, request: TraceRequest | None) -> None:
        self._holds[cgroup_id] = request
        container = self.containers.of_cgroup(cgroup_id)
        if container is None:
            return
        for sub, path in container.subgroups().items():
            self._follow(container, sub, path)

    # -- outputs -------------------------------------------------------------------
    def _send_status(self, status: dict[str, Any]) -> None:
        tag = _micros(status.get("lastHeartbeatTime"))
        capture = self._captures.get(tag)
        snapshot = getattr(self.backend, "snapshot", None)
        slot = snapshot(capture, tag) if snapshot and capture and tag else -1
        try:
            self.kube.patch_status(status)
        except Exception:
            self.metrics.api_error("status")
            raise
        if slot >= 0:
            self.backend.committed(slot)  # type: ignore[attr-defined]

    def _resume(self, items: list[dict[str, Any]]) -> None:
        """Once, at the first sight of this node's NodeTracer (or of its absence):
        a backend resumed from pins goes on from what the last status written holds
        (bpf/loader.py: resume_from)."""
        if self._resumed:
            return
        self._resumed = True
        resume_from = getattr(self.backend, "resume_from", None)
        if resume_from is None:
            return
        status = (items[0].get("status") or {}) if items else {}
        resume_from(_micros(status.get("lastHeartbeatTime")))
        if note := self.backend.resume.reported:  # type: ignore[attr-defined]
            log.warning("%s", note)

    def _observe(self, obs: Observation) -> None:
        planned = self.state.plan.targets[obs.key]
        target = planned.target
        event = obs.event
        kind = type(event).__name__.removesuffix("Event").lower()
        self.metrics.event(kind)
        if self.options.json_events:
            line: dict[str, Any] = {
                "type": kind, "node": self.options.node, "namespace": target.namespace,
                "pod": target.pod, "container": target.container,
                "container_id": planned.container_id, "cgroup_id": event.cgroup_id,
                "pid": event.pid, "comm": event.comm,
                "time": wall_time(event.timestamp_ns, self._offset_ns),
            }
            if isinstance(event, ExecEvent):
                line.update(ppid=event.ppid, uid=event.uid, filename=event.filename)
            elif isinstance(event, ExitEvent):
                line.update(exit_code=event.exit_code)
            elif isinstance(event, OpenEvent):
                line.update(path=event.path, flags=event.flags)
            else:
                line.update(address=event.address, port=event.port)
            if obs.matches:
                line["rules"] = [f"{m.ref.source}#{m.ref.rule}" for m in obs.matches]
            self.emit(line)
        for match in obs.matches:
            self._matched(obs.key, match, event.comm)

    def _matched(self, key: tuple[str, str], match: Match, comm: str = "") -> None:
        target = self.state.plan.targets[key].target
        self.metrics.rule_match(match.ref.source, match.ref.rule, match.count)
        series = self.limiter.record(
            target.pod_uid, match.ref.source, match.ref.rule,
            f"{match.what} ({comm})" if comm else match.what, time.monotonic(), match.count,
        )
        if series is not None:
            self._first_seen.setdefault(series.key, datetime.now(UTC))

    def _write_events(self, now: float) -> None:
        """Take the Event writes that finished; queue the ones due (off the loop)."""
        for key, error in self.sender.done():
            writing = self._writing.pop(key, None)
            if writing is None:
                continue
            series, count, when, what = writing
            if error is not None:
                self.metrics.api_error("event")
                log.warning("event %s not written (again in %.0fs): %s", what,
                            self.limiter.interval, error)
                if series is self.limiter.series(key):
                    self.limiter.failed(series, when)
            elif series is self.limiter.series(key):  # not forgotten meanwhile
                self.limiter.written(series, when, count)
                log.info("event %s", what)
        for action, series in self.limiter.due(now):
            if series.key in self._writing:
                continue
            pod_uid, source_id, rule_name = series.key
            source = self.state.sources.get(source_id)
            rule = next((r for r in source.rules if r.name == rule_name), None) if source else None
            planned = next((p for k, p in self.state.plan.targets.items() if k[0] == pod_uid),
                           None)
            if rule is None or planned is None:
                continue
            target = planned.target
            text = rule.message or rule.reason
            note = (f"{text}: {series.last_what} in container {target.container} of pod "
                    f"{target.namespace}/{target.pod}, rule {rule.name} of {source_id}")
            # (how many times: the Event's series.count, which alone may change later)
            kind, _, name = source_id.partition("/")
            ns, _, name = name.rpartition("/")
            related = {"apiVersion": "podtrace.io/v1alpha1", "kind": kind, "name": name}
            if ns:
                related["namespace"] = ns
            write = partial(
                self.kube.write_event,
                pod={"uid": pod_uid, "namespace": target.namespace, "name": target.pod},
                key=series.key, reason=rule.reason, type_=rule.type, note=note,
                action=rule.name, count=series.count,
                first_seen=self._first_seen.get(series.key, datetime.now(UTC)), related=related,
            )
            what = f"{action.value} {rule.reason} on {target.namespace}/{target.pod}"
            if self.sender.write(series.key, write):
                self._writing[series.key] = (series, series.count, now, what)

    def _apply_plan(self) -> None:
        now_wall = datetime.now(UTC)
        self.state.limits = self.backend.limits
        changes, replayed = self.state.replan(time.monotonic(), now_wall)
        outcomes = {}
        for cgroup_id, request in changes.trace.items():
            outcome = apply_request(self.backend, cgroup_id, request, self.state.sources)
            if outcome.rejected and outcome.rejected != self.state.refused.get(cgroup_id):
                for sid, why in outcome.rejected.items():
                    log.warning("%s not applied to %s: %s: %s", sid, request.path,
                                why.reason.value, why.message)
            outcomes[cgroup_id] = outcome
            self._hold(cgroup_id, outcome.request)
        changes.untrace = {c for c in changes.untrace if remove(self.backend, c)}
        for cgroup_id in changes.untrace:
            self._hold(cgroup_id, None)
        self.state.applied(changes, outcomes)
        if self.state.needs_counts():  # a source began on a container: its baseline, now
            self.containers.take_counts(self.backend.syscall_counts())
            self.counted(list(self.containers))
        for obs in replayed:
            self._observe(obs)

    def _report(self) -> None:
        now = datetime.now(UTC)
        if self.runtime_watch is not None:
            runtime = self.runtime_watch.state()
            health = Health(backend_running=True, runtime=runtime.report.to_status(),
                            runtime_message=runtime.message,
                            runtime_reachable=runtime.reachable)
            self.metrics.set_runtime(runtime.reachable)
        else:
            health = Health(backend_running=True, runtime=self.runtime_report.to_status(),
                            runtime_message=self.runtime_report.message)
        stats = self.backend.stats()
        status = node_status(
            report=self.report, health=health, stats=stats, state=self.state,
            previous=self.conditions, now=now, agent_version=_agent_version(),
            installs=self.installs,
        )
        self.conditions = list(status.conditions)
        capture = getattr(self.backend, "capture", None)
        if capture is not None:  # what this status counts, kept if it is written
            self._captures[_micros(now.isoformat())] = capture()
            while len(self._captures) > CAPTURES_KEPT:
                del self._captures[next(iter(self._captures))]
        self.metrics.set_state(status.traced_containers, stats.events_dropped,
                               [(m.name, m.used, m.capacity) for m in stats.maps])
        self.metrics.set_not_applied(status.targets)
        self.sender.status(status.to_wire(), time.monotonic())

def _micros(stamp: str | None) -> int | None:
    """A status's lastHeartbeatTime in microseconds since the epoch (its tag).

    >>> _micros("2026-11-29T08:03:25.216037Z"), _micros(None)
    (1795939405216037, None)
    """
    if not stamp:
        return None
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def run_agent(options: AgentOptions) -> int:
    """The whole command; 1 when tracing cannot start on this node."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    metrics = AgentMetrics(options.node)
    heartbeat = Heartbeat(stall_after=options.stall_timeout)
    if options.metrics_port:  # /healthz says "starting" through discovery and BCC's compile
        serve(metrics.registry, heartbeat, options.metrics_port)
    report = discover(cgroupfs=options.cgroupfs, kubepods=options.kubepods,
                      backend=options.backend, allow_mount=options.allow_mount)
    root = report.cgroup.kubepods()
    if report.fatal or root is None:
        for problem in report.fatal:
            log.error("%s", problem.message)
        return 1
    runtime = discover_runtime(options.runtime_endpoints, options.host_root)
    log.info("runtime: %s", runtime.message)
    make = partial(make_backend, max_traced=options.max_traced,
                   ringbuf_pages=options.ringbuf_pages,
                   pin_dir=PIN_ROOT / instance_name(options.pin_instance)
                   if options.pin_instance else None,
                   allow_mount=False,  # a bpffs mounted in the pod would die with it
                   reported=True)
    backend, report = start_backend(report, options.backend, root, make)
    if backend is None:
        log.error("no tracing backend: %s", report.backend.reason)
        return 1
    log.info("backend %s: %s", report.backend.name.value, report.backend.reason)
    for line in resume_lines(backend):
        log.warning("%s", line)
    enricher = Enricher.from_report(runtime)
    enrichment = Enrichment(enricher)
    watch = RuntimeWatch(runtime, rediscover=partial(
        discover_runtime, options.runtime_endpoints, options.host_root))
    kube = Kube(load_config(options.kubeconfig), options.node)
    agent = Agent(
        options=options, report=report, backend=backend, kube=kube, metrics=metrics,
        runtime_report=runtime, emit=Output(sys.stdout), runtime_watch=watch,
    )
    core = Core(backend, root, agent, enrichment=enrichment, counts_every=COUNTS_EVERY_S,
                heartbeat=heartbeat)
    agent.containers = core.containers

    def runtime_back(report: RuntimeReport) -> None:  # ask it who the unnamed ones are
        enricher.attach(report)
        core.resync_soon()

    watch.start(on_back=runtime_back)
    stop = Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        kube.watch_node_tracer(*agent.inbox_handlers("nodetracer")[:2])
        kube.watch_pods(*agent.inbox_handlers("pods")[:2])
        if agent.seccomp is not None:
            kube.watch_install_config_maps(options.install_namespace,
                                           *agent.inbox_handlers("seccomp"))
        core.adopt(core.scan())
        core.run(stop)
        agent.finish()
    finally:
        kube.stop.set()
        watch.close()
        enrichment.close()
        # Pins outlive a restart (kill -9, SIGTERM of a rollout), not an uninstall.
        if stop.signalled and kube.uninstalling(options.namespace):
            log.info("podtrace is being uninstalled: removing this node's BPF pins")
            unpin = getattr(backend, "unpin", None)
            if unpin is not None:
                unpin()
            if agent.seccomp is not None:
                log.info("removing the seccomp profiles installed in %s", agent.seccomp.subdir)
                agent.seccomp.remove_all()
        backend.close()
        enricher.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
