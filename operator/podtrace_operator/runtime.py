"""The running operator: what the watches reported, the compile index, and the
one writer task that turns them into NodeTracer specs, status and Events.

kopf handlers call the `*_seen` / `*_gone` methods: synchronous, no I/O, they
only update memory and mark what became dirty. The writer wakes on that,
waits a moment for the rest of a burst, and then writes what differs from what
the apiserver holds — so an unchanged input writes nothing, and every write is
serialized (no two writes to one object race each other).

Stale watch events: after a write, a watch event already in flight may still
carry the object as it was before that write. Each state remembers what its
last write replaced; an event carrying exactly that is older than what we hold
and is ignored, so a status or spec never flips back and forth. After a re-list
(when this replica takes the Lease over), a watch event whose resourceVersion
is not newer than the list's is older than what the list gave, and is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from podtrace_api import API_VERSION
from podtrace_api.containertrace import ContainerTraceSpec, ContainerTraceStatus
from podtrace_api.nodeconfig import source_id
from podtrace_api.nodetracer import SourceKind
from podtrace_api.seccompinstall import (
    DIGEST_ANNOTATION,
    INSTALL_LABEL,
    INSTALL_NAMESPACE,
    TRACE_ANNOTATION,
    TRACE_UID_ANNOTATION,
    config_map_name,
)
from podtrace_api.syscalls import name_of as name_of_syscall
from podtrace_api.tracingpolicy import TracingPolicyStatus

from .compiler import ClusterIndex, WireSpec
from .events import (
    EventSpec,
    ObjectRef,
    event_name,
    new_event,
    next_count,
    occurrence,
    raised_by,
    series_patch,
)
from .heartbeats import Seen, Silence, observe, ready_unknown, silence, stale_at
from .installs import Claims, Holder, InstallPlan, install_files, with_install
from .inventory import labels_of, name_of, pod_record
from .kube import CR, ApiError, Kube
from .leadership import Gate, Standalone
from .merge_patch import replace_patch
from .policy_status import policy_events, policy_status, same_status, stored_rules
from .profiles import ProfileBook
from .reports import NodeReport, node_report
from .seccomp import DEFAULT_ARCH, profile_files
from .sources import Parsed, parse_policy, parse_trace
from .spo import MANAGED_BY_KEY, SpoApi, api_of, orphans, seccomp_profiles
from .tallies import Ledger, Tally
from .trace_status import TraceInput, is_active, stored_tally, trace_events, trace_status

logger = logging.getLogger(__name__)

ARCH_LABEL = "kubernetes.io/arch"
MANAGED_BY = {"app.kubernetes.io/managed-by": "podtrace-operator"}
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Settings:
    """Tunables of the running operator (flags of `podtrace-operator`)."""

    pending_timeout: timedelta = timedelta(minutes=5)  # ContainerTrace: Pending → Failed
    # No new NodeTracer heartbeat for this long: Ready Unknown (3 × the agent's default
    # 30 s heartbeat interval plus slack for a slow write; heartbeats.py).
    heartbeat_timeout: timedelta = timedelta(minutes=2)
    top_syscalls: int = 20  # ContainerTrace status: syscall histogram size
    debounce: float = 0.05  # seconds to let a burst of events land before writing
    retry_delay: float = 2.0  # seconds before retrying failed writes
    concurrency: int = 8  # parallel writes
    instance: str = "podtrace-operator"  # Events' reportingInstance
    namespace: str = INSTALL_NAMESPACE  # its own: where installed profiles are published


def utcnow() -> datetime:
    # Whole seconds: the apiserver stores metav1.Time so, and equal is then equal.
    return datetime.now(UTC).replace(microsecond=0)


PUBLISH_RETRY = timedelta(minutes=5)  # a refused install write or list is tried again then


def _installs(state: TraceState) -> bool:
    """Whether the trace asks for its profiles on the nodes."""
    request = state.spec.seccomp_profile if state.spec else None
    return request is not None and request.install


def _read_status(model: type[M], body: Mapping[str, Any]) -> M | None:
    raw = body.get("status")
    if not raw:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        logger.warning("%s: unreadable status treated as empty: %s", name_of(body), err)
        return None


def _created(body: Mapping[str, Any]) -> datetime:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else utcnow()


def revision(body: Mapping[str, Any]) -> int | None:
    """An object's resourceVersion as a number (etcd's revision), None when it is not one.

    >>> revision({"metadata": {"resourceVersion": "42"}}), revision({})
    (42, None)
    """
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def _version(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


def _status_patch(state: PolicyState | TraceState, old: WireSpec, new: WireSpec) -> WireSpec:
    """The status merge patch, conditional on the version our decision was made from: the
    apiserver answers 409 Conflict if the object changed since (a user's edit, or a write
    of another replica), and nothing is written from a stale view."""
    patch: WireSpec = {"status": replace_patch(old, new)}
    if state.version:
        patch["metadata"] = {"resourceVersion": state.version}
    return patch


def _took_answer(current: PolicyState | TraceState, answer: Mapping[str, Any]) -> None:
    """Move a state to the version our write produced, unless a newer one arrived."""
    mine, held = revision(answer), revision({"metadata": {"resourceVersion": current.version}})
    if mine is None or held is None or mine > held:
        current.version = _version(answer)


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(keys) or "nothing"


@dataclass
class PolicyState:
    name: str
    uid: str
    generation: int
    parsed: Parsed
    status: TracingPolicyStatus | None
    replaced: dict[str, Any] | None = None  # the stored status our last write replaced
    version: str = ""  # resourceVersion of what we hold: status writes are conditional on it

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(API_VERSION, "TracingPolicy", self.name, self.uid)


@dataclass
class TraceState:
    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime
    spec: ContainerTraceSpec | None
    parsed: Parsed
    status: ContainerTraceStatus | None
    replaced: dict[str, Any] | None = None
    version: str = ""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(API_VERSION, "ContainerTrace", self.name, self.uid, self.namespace)


def _older_than_our_write(
    state: PolicyState | TraceState | None, body: Mapping[str, Any], generation: int
) -> bool:
    """A watch event still carrying the status our last write replaced."""
    return (
        state is not None
        and state.replaced is not None
        and state.generation == generation
        and (body.get("status") or {}) == state.replaced
    )


@dataclass
class Dirty:
    """What the writer has to look at next."""

    nodes: set[str] = field(default_factory=set)  # NodeTracers to compare with the index
    sources: set[str] = field(default_factory=set)  # policies and traces to re-status


class Runtime:
    """Memory of the cluster plus the writer. One instance per operator process."""

    def __init__(
        self,
        settings: Settings,
        kube: Kube | None,
        gate: Gate | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.gate: Gate = gate or Standalone()
        self.clock = clock
        self.index = ClusterIndex()
        self.policies: dict[str, PolicyState] = {}
        self.traces: dict[str, TraceState] = {}  # by source id
        self.reports: dict[str, NodeReport] = {}
        self.ledger = Ledger()  # counts of targets gone, kept (and kept across re-lists)
        # each trace's replicas' workload syscalls, kept likewise
        self.profiles = ProfileBook()
        self.written_profiles: dict[str, dict[str, str]] = {}  # trace UID → ConfigMap data
        # SPO's SeccompProfile CRD, as its watch last showed it (None: not installed)
        self.spo: SpoApi | None = None
        self.written_spo: dict[str, dict[str, str]] = {}  # trace UID → profiles written to SPO
        self.spo_sweep = False  # look for SeccompProfiles of traces gone
        # Profiles installed on the nodes (installs.py): who holds which file name, and
        # what each trace's install ConfigMap holds (trace UID → data), as last written.
        self.claims = Claims()
        self.installed: dict[str, dict[str, str]] = {}
        self.install_listed = False  # the install ConfigMaps were listed (claims seeded)
        self.install_error = ""  # why they could not be: no install is written then
        self.install_epoch = 0  # bumped by a trace gone: a list begun before is stale
        self.install_retry_at: datetime | None = None  # a refused list, tried again then
        # trace UID → (version, when, why): a refused write, tried again for a new version
        # or after PUBLISH_RETRY (not at each heartbeat of the trace's nodes)
        self.publish_failed: dict[str, tuple[str, datetime, str]] = {}
        self.stored: dict[str, WireSpec] = {}  # NodeTracer name → spec as the apiserver holds it
        self.replaced_specs: dict[str, WireSpec] = {}
        self.node_uids: dict[str, str] = {}
        self.deadlines: dict[str, datetime] = {}  # source id → when to re-status it
        self.heartbeats: dict[str, Seen] = {}  # node → its agent's last heartbeat, as seen
        self.node_deadlines: dict[str, datetime] = {}  # node → when its agent goes silent
        self.dirty = Dirty()
        self.synced = False  # kopf listed every watched kind once
        self.needs_resync = False  # re-list before writing (on taking the Lease)
        self.listed_at: dict[str, int] = {}  # kind → revision of its last re-list
        self.writes = 0  # apiserver writes done (for tests and probes)
        self._journal: list[tuple[Callable[[Mapping[str, Any]], None], Mapping[str, Any]]] | None
        self._journal = None
        self._wake = asyncio.Event()

    # -- watch input (called by kopf handlers) ------------------------------------------------

    def _poke(self) -> None:
        self._wake.set()

    def _record(self, fn: Callable[[Mapping[str, Any]], None], body: Mapping[str, Any]) -> bool:
        """Whether to take a watch event in: False when the last re-list of its kind was
        newer. While a re-list runs, the event is also kept to be replayed after it."""
        kind = fn.__name__.rsplit("_", 1)[0]
        floor, rv = self.listed_at.get(kind), revision(body)
        if floor is not None and rv is not None and rv <= floor:
            return False
        if self._journal is not None:
            self._journal.append((fn, dict(body)))
        return True

    def mark_synced(self) -> None:
        if not self.synced:
            logger.info("initial listing complete: %d pods, %d nodes, %d policies, %d traces",
                        len(self.index.pods), len(self.index.nodes), len(self.policies),
                        len(self.traces))  # fmt: skip
            self.synced = True
            self.dirty.nodes.update(self.index.nodes, self.stored)
            self.dirty.sources.update(self.policies, self.traces)
            self._poke()

    def pod_seen(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.pod_seen, body):
            return
        self.index.upsert_pod(pod_record(body))
        self._poke_if_dirty()

    def pod_gone(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.pod_gone, body):
            return
        self.index.delete_pod(str((body.get("metadata") or {}).get("uid", "")))
        self._poke_if_dirty()

    def namespace_seen(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.namespace_seen, body):
            return
        self.index.upsert_namespace(name_of(body), labels_of(body))
        self._poke_if_dirty()

    def namespace_gone(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.namespace_gone, body):
            return
        self.index.delete_namespace(name_of(body))
        self._poke_if_dirty()

    def node_seen(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.node_seen, body):
            return
        name = name_of(body)
        self.node_uids[name] = str((body.get("metadata") or {}).get("uid", ""))
        self.index.upsert_node(name, labels_of(body))
        self._poke_if_dirty()

    def node_gone(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.node_gone, body):
            return
        name = name_of(body)
        self.node_uids.pop(name, None)
        self.index.delete_node(name)
        self.dirty.nodes.add(name)
        self._poke()

    def _poke_if_dirty(self) -> None:
        if self.index.dirty:
            self._poke()

    def policy_seen(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.policy_seen, body):
            return
        meta = body.get("metadata") or {}
        name, uid = meta["name"], str(meta.get("uid", ""))
        generation = int(meta.get("generation") or 0)
        old = self.policies.get(source_id(SourceKind.TRACING_POLICY, name))
        if _older_than_our_write(old, body, generation):
            return
        if old is not None and (old.uid, old.generation) == (uid, generation):
            parsed = old.parsed  # the spec did not change (generation did not move)
        else:
            parsed = parse_policy(body)
        status = _read_status(TracingPolicyStatus, body)
        state = PolicyState(name, uid, generation, parsed, status, version=_version(body))
        self.policies[parsed.id] = state
        if parsed.source is not None:
            self.index.upsert_source(parsed.source)
        else:
            self.index.delete_source(parsed.id)
        self.dirty.sources.add(parsed.id)
        self._poke()

    def policy_gone(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.policy_gone, body):
            return
        sid = source_id(SourceKind.TRACING_POLICY, name_of(body))
        self.policies.pop(sid, None)
        self.ledger.forget(sid)
        self.index.delete_source(sid)
        self._poke()

    def trace_seen(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.trace_seen, body):
            return
        meta = body.get("metadata") or {}
        name, namespace, uid = meta["name"], meta["namespace"], str(meta.get("uid", ""))
        sid = source_id(SourceKind.CONTAINER_TRACE, name, namespace)
        generation = int(meta.get("generation") or 0)
        old = self.traces.get(sid)
        if _older_than_our_write(old, body, generation):
            return
        status = _read_status(ContainerTraceStatus, body)
        try:
            spec: ContainerTraceSpec | None = ContainerTraceSpec.model_validate(
                body.get("spec") or {}
            )
        except ValidationError:
            spec = None
        if old is not None and (old.uid, old.generation) == (uid, generation):
            parsed = old.parsed
        else:
            parsed = parse_trace(body)
        state = TraceState(namespace, name, uid, generation, _created(body), spec, parsed, status,
                           version=_version(body))  # fmt: skip
        self.traces[sid] = state
        self._place_trace(state)
        self.dirty.sources.add(sid)
        self._poke()

    def _place_trace(self, state: TraceState) -> None:
        """Put the trace in the index while it may select, take it out when it may not."""
        source = state.parsed.source
        if source is None:
            self.index.delete_source(state.parsed.id)
        else:
            self.index.upsert_source(replace(source, active=is_active(state.status, True)))

    def trace_gone(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.trace_gone, body):
            return
        meta = body.get("metadata") or {}
        self.written_spo.pop(str(meta.get("uid", "")), None)
        self.spo_sweep = True  # its SeccompProfiles go (cluster-scoped: no owner to GC them)
        sid = source_id(SourceKind.CONTAINER_TRACE, meta["name"], meta["namespace"])
        uid = str(meta.get("uid", ""))
        gone = self.traces.get(sid)
        if uid in self.installed or (gone is not None and _installs(gone)):
            # Its installed profiles go (another namespace: no GC): listed again and swept;
            # a list under way when it went may have seen it still (the epoch says so).
            self.install_listed = False
            self.install_epoch += 1
        self.claims.release(uid)
        self.traces.pop(sid, None)
        self.ledger.forget(sid)
        self.profiles.forget(sid)
        self.deadlines.pop(sid, None)
        self.index.delete_source(sid)
        self._poke()

    def spo_crd_seen(self, body: Mapping[str, Any]) -> None:
        """SPO's SeccompProfile CRD was listed, installed or changed: write every trace's
        profiles as SeccompProfiles too (and look for those of traces gone meanwhile)."""
        api = api_of(body)
        if api == self.spo:
            return
        logger.info("SPO's SeccompProfile CRD: %s", api or "no version podtrace writes")
        self.spo = api
        self.written_spo.clear()
        self.spo_sweep = True
        self.dirty.sources.update(self.traces)
        self._poke()

    def spo_crd_gone(self, body: Mapping[str, Any]) -> None:
        """SPO's CRD was removed (and with it every SeccompProfile)."""
        logger.info("SPO's SeccompProfile CRD removed")
        self.spo = None
        self.written_spo.clear()

    def nodetracer_seen(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.nodetracer_seen, body):
            return
        name = name_of(body)
        spec = dict(body.get("spec") or {})
        if name in self.replaced_specs and spec == self.replaced_specs[name]:
            return  # older than our last spec write
        self.replaced_specs.pop(name, None)
        self._take_report(name, node_report(body))
        self.stored[name] = spec
        self.dirty.nodes.add(name)
        self._poke()

    def nodetracer_gone(self, body: Mapping[str, Any]) -> None:
        if not self._record(self.nodetracer_gone, body):
            return
        name = name_of(body)
        self.stored.pop(name, None)
        self.replaced_specs.pop(name, None)
        self._take_report(name, None)
        self.dirty.nodes.add(name)  # recreate it if the node is still there
        self._poke()

    def _take_report(self, name: str, report: NodeReport | None) -> None:
        old = self.reports.pop(name, None)
        if report is not None:
            self.reports[name] = report
            self.heartbeats[name] = observe(
                self.heartbeats.get(name), report.heartbeat, self.clock(),
                marked=report.conditions, timeout=self.settings.heartbeat_timeout,
            )  # fmt: skip
        else:
            self.heartbeats.pop(name, None)
            self.node_deadlines.pop(name, None)
        arch = self.index.nodes.get(name, {}).get(ARCH_LABEL, DEFAULT_ARCH)
        self.ledger.observe(name, report, partial(name_of_syscall, arch=arch))
        if report is not None:
            spec_of = self.stored.get(name) or {}
            self.profiles.observe(
                name, report.profiles, spec_of.get("targets") or [],
                partial(name_of_syscall, arch=arch), report.profiles_omitted,
                frozenset(s["id"] for s in spec_of.get("sources") or [] if s.get("profile")),
            )  # fmt: skip
        for r in (old, report):
            if r is not None:
                self.dirty.sources.update(r.spec_sources)
                self.dirty.sources.update(r.sources)
        if (old.installs if old else None) != (report.installs if report else None) or (
                (old is None) != (report is None)):  # nodes with installs changed
            self.dirty.sources.update(sid for sid, t in self.traces.items() if _installs(t))

    # -- re-listing after a pause ---------------------------------------------------------------

    def activated(self) -> None:
        """The gate says we may write (again): re-list before writing. Our watches may lag
        behind what the previous writer wrote; a fresh list does not."""
        self.needs_resync = True
        self._poke()

    async def resync(self) -> None:
        """Rebuild memory from fresh lists.

        Events that arrive while listing are journaled and replayed on top, so an
        object deleted during the listing does not come back; those, and later ones,
        not newer than their kind's list are ignored (the list already holds them)."""
        assert self.kube is not None
        self._journal = []
        try:
            lists, revisions = {}, {}
            for kind, path in RESYNC_PATHS.items():
                lists[kind], version = await self.kube.list_snapshot(path)
                revisions[kind] = revision({"metadata": {"resourceVersion": version}})
        except BaseException:
            self._journal = None
            raise
        journal, self._journal = self._journal, None
        self._reset()
        self.listed_at.clear()
        for kind, items in lists.items():
            handler = getattr(self, f"{kind}_seen")
            for item in items:
                handler(item)
        self.listed_at = {kind: rv for kind, rv in revisions.items() if rv is not None}
        # NodeTracers gone while paused: their targets' counts move to the carried totals.
        listed = {name_of(b) for b in lists["nodetracer"]}
        for name in set(self.reports) - listed:
            self._take_report(name, None)
            self.stored.pop(name, None)
        for fn, body in journal:
            fn(body)
        self.needs_resync = False
        self.install_listed = False
        self.spo_sweep = True  # traces may have gone while another replica wrote
        self.synced = False
        self.mark_synced()
        logger.info("re-listed before writing (%d events arrived meanwhile)", len(journal))

    def _reset(self) -> None:
        """Forget what the re-list will tell again. Reports stay, so that the ledger
        sees each NodeTracer's change across the pause (see `resync`)."""
        self.index = ClusterIndex()
        self.policies.clear()
        self.traces.clear()
        self.replaced_specs.clear()
        self.node_uids.clear()
        self.deadlines.clear()

    # -- the writer ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: wait for work (or a deadline), then write what differs."""
        while True:
            await self._sleep_until_work()
            self._wake.clear()
            await asyncio.sleep(self.settings.debounce)
            if not self.gate.active or not (self.synced or self.needs_resync):
                continue
            try:
                if self.needs_resync:
                    await self.resync()
                failed = await self.reconcile()
            except Exception:
                logger.exception("reconcile failed; retrying")
                failed = True
            if failed:
                await asyncio.sleep(self.settings.retry_delay)
                self._poke()

    async def _sleep_until_work(self) -> None:
        timeout = None
        deadlines = [*self.deadlines.values(), *self.node_deadlines.values()]
        if deadlines:
            timeout = max(0.0, (min(deadlines) - self.clock()).total_seconds())
            timeout += 0.5  # whole-second clock: wake just after, not just before
        # asyncio.timeout, not wait_for: wait_for runs the wait as a task of its own, which
        # kopf, at a SIGTERM, counts as hung and waits 5 s for before it returns, delaying
        # the release of the Lease by as much.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def reconcile(self) -> bool:
        """One pass over everything dirty; True when some write failed (retry later)."""
        now = self.clock()
        for sid, when in list(self.deadlines.items()):
            if when <= now:
                self.dirty.sources.add(sid)
        for node, when in list(self.node_deadlines.items()):
            if when <= now:  # its agent went silent: the NodeTracer and its sources say so
                del self.node_deadlines[node]
                self.dirty.nodes.add(node)
                report = self.reports.get(node)
                if report is not None:
                    self.dirty.sources.update(report.spec_sources, report.sources)
        failed = False
        if not self.install_listed:
            try:
                await self._list_installs()
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
                # The rest goes on; installs wait for the list (or, refused, say why).
                self.install_error = f"podtrace's published profiles cannot be listed: {err}"
                logger.warning("%s", self.install_error)
                transient = not isinstance(err, ApiError) or err.transient
                failed = transient
                self.install_listed = not transient
                self.install_retry_at = None if transient else self.clock() + PUBLISH_RETRY
        for _ in range(8):  # trace phase changes feed back into the index; bounded
            for node, spec in self.index.flush().items():
                self.dirty.nodes.add(node)
                self._mark_sources(self.stored.get(node), spec)
                overflow = self.index.overflow.get(node)
                if overflow is not None:  # left out entirely: in neither spec
                    self.dirty.sources.update(overflow.left_out)
            nodes, self.dirty.nodes = self.dirty.nodes, set()
            failed |= await self._each(sorted(nodes), self._sync_nodetracer, self.dirty.nodes)
            sources, self.dirty.sources = self.dirty.sources, set()
            failed |= await self._each(sorted(sources), self._sync_source, self.dirty.sources)
            if not self.index.dirty:
                break
        if self.spo_sweep and self.spo is not None:
            self.spo_sweep = False  # before the awaits: a trace gone meanwhile sets it again
            try:
                await self._sweep_spo(self.spo)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
                logger.warning("SeccompProfiles of traces gone not cleaned up yet: %s", err)
                self.spo_sweep = failed = True
        return failed

    def _mark_sources(self, *specs: WireSpec | None) -> None:
        for spec in specs:
            for source in (spec or {}).get("sources") or ():
                self.dirty.sources.add(source["id"])

    async def _each(
        self, keys: Iterable[str], fn: Callable[[str], Awaitable[None]], retry: set[str]
    ) -> bool:
        """Run `fn` over `keys` with bounded parallelism; failed keys go back to `retry`."""
        limit = asyncio.Semaphore(self.settings.concurrency)
        failed = False

        async def one(key: str) -> None:
            nonlocal failed
            async with limit:
                try:
                    await fn(key)
                except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
                    logger.warning("%s: %s (will retry)", key, err)
                    retry.add(key)
                    failed = True

        await asyncio.gather(*(one(k) for k in keys))
        return failed

    # -- NodeTracers ----------------------------------------------------------------------------

    def _nodetracer_body(self, node: str, spec: WireSpec) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": node, "labels": dict(MANAGED_BY)}
        uid = self.node_uids.get(node)
        if uid:
            # Garbage collection removes it with its Node where a controller-manager runs.
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node,
                                        "uid": uid}]  # fmt: skip
        return {"apiVersion": API_VERSION, "kind": "NodeTracer", "metadata": meta, "spec": spec}

    async def _sync_nodetracer(self, node: str) -> None:
        assert self.kube is not None
        desired = self.index.specs.get(node) if node in self.index.nodes else None
        stored = self.stored.get(node)
        if desired is None:
            if node in self.stored:
                logger.info("NodeTracer %s: deleting (node gone)", node)
                await self.kube.delete_nodetracer(node)
                self.writes += 1
                self.stored.pop(node, None)
                self._take_report(node, None)
            return
        if stored != desired:
            await self._write_spec(node, stored, desired)
        await self._check_heartbeat(node)

    async def _write_spec(self, node: str, stored: WireSpec | None, desired: WireSpec) -> None:
        assert self.kube is not None
        if node not in self.stored:
            try:
                answer = await self.kube.create_nodetracer(self._nodetracer_body(node, desired))
            except ApiError as err:
                if err.status != 409:
                    raise
                answer = await self.kube.patch_nodetracer(node, {"spec": desired})
        else:
            answer = await self.kube.patch_nodetracer(
                node, {"spec": replace_patch(stored, desired)}
            )
            self.replaced_specs[node] = dict(stored or {})
        self.writes += 1
        logger.info("NodeTracer %s: spec written (%d sources, %d targets)", node,
                    len(desired["sources"]), len(desired["targets"]))  # fmt: skip
        overflow = self.index.overflow.get(node)
        if overflow:
            logger.warning(
                "NodeTracer %s: %d targets and %d sources left out to stay within the CRD's "
                "bounds", node, overflow.targets, overflow.sources,
            )  # fmt: skip
        self.stored[node] = dict(answer.get("spec") or {})
        self._take_report(node, node_report(answer))

    def silent(self) -> dict[str, Silence]:
        """The nodes whose agent sent no heartbeat for the heartbeat timeout, now."""
        now, timeout = self.clock(), self.settings.heartbeat_timeout
        found = {node: silence(node, seen, now, timeout) for node, seen in self.heartbeats.items()}
        return {node: s for node, s in found.items() if s is not None}

    async def _check_heartbeat(self, node: str) -> None:
        """Ready Unknown on the NodeTracer of a silent agent; else when to look again."""
        assert self.kube is not None
        report, seen = self.reports.get(node), self.heartbeats.get(node)
        if report is None or seen is None:
            self.node_deadlines.pop(node, None)
            return
        now, timeout = self.clock(), self.settings.heartbeat_timeout
        quiet = silence(node, seen, now, timeout)
        if quiet is None:
            self.node_deadlines[node] = stale_at(seen, timeout)
            return
        self.node_deadlines.pop(node, None)
        conditions = ready_unknown(report.conditions, quiet, timeout, now)
        if conditions is None:
            return  # already says so
        patch: WireSpec = {"status": {"conditions": [c.to_wire() for c in conditions]}}
        if report.version:  # never over a newer report (a heartbeat that just arrived)
            patch["metadata"] = {"resourceVersion": report.version}
        try:
            answer = await self.kube.patch_nodetracer_status(node, patch)
        except ApiError as err:
            if err.status not in (404, 409):
                raise
            logger.info("NodeTracer %s: Ready Unknown not written: %s (a newer version "
                        "or none; its watch event decides again)", node, err)  # fmt: skip
            return
        self.writes += 1
        ready = next(c for c in conditions if c.type == "Ready")
        logger.warning("NodeTracer %s: Ready Unknown: %s", node, ready.message)
        held = self.reports.get(node)
        mine, theirs = revision(answer), revision({"metadata": {"resourceVersion":
                                                               held.version if held else ""}})
        if mine is not None and (theirs is None or mine > theirs):
            self._take_report(node, node_report(answer))

    # -- status ---------------------------------------------------------------------------------

    async def _sync_source(self, sid: str) -> None:
        if sid in self.policies:
            await self._sync_policy(self.policies[sid])
        elif sid in self.traces:
            await self._sync_trace(self.traces[sid])

    async def _sync_policy(self, state: PolicyState) -> None:
        assert self.kube is not None
        sid = state.parsed.id
        rules = stored_rules(state.status)
        self.ledger.seed(sid, Tally(rules=rules) if rules is not None else None)
        new = policy_status(
            generation=state.generation,
            problems=state.parsed.problems,
            placement=self.index.placement(sid),
            left_out=self.index.left_out(sid),
            reports=self.reports,
            rules=self.ledger.total(sid).rules,
            source_id=sid,
            old=state.status,
            now=self.clock(),
            silent=self.silent(),
        )
        if same_status(state.status, new):
            return
        old_wire = state.status.to_wire() if state.status else {}
        # Events first, keyed by the status they leave (see events.py): exactly once even
        # when this process dies before the status write below.
        for event in policy_events(state.status, new):
            await self._emit(state.ref, event, occurrence(old_wire))
        answer = await self.kube.patch_policy_status(
            state.name, _status_patch(state, old_wire, new.to_wire())
        )
        self.writes += 1
        logger.info("TracingPolicy %s: status written (%s)", state.name,
                    _changed_keys(old_wire, new.to_wire()))  # fmt: skip
        # The state may have been replaced by a watch event while we waited: update the
        # current one (the answer is the newest version of the object).
        current = self.policies.get(state.parsed.id)
        if current is not None and current.uid == state.uid:
            current.replaced = old_wire
            current.status = _read_status(TracingPolicyStatus, answer)
            _took_answer(current, answer)

    async def _sync_trace(self, state: TraceState) -> None:
        assert self.kube is not None
        sid = state.parsed.id
        self.ledger.seed(sid, stored_tally(state.status))
        self.profiles.seed(sid, state.status.seccomp_profile if state.status else None)
        targets = self.index.targets_of(sid)
        arches = {self.index.nodes.get(node, {}).get(ARCH_LABEL, DEFAULT_ARCH)
                  for node, _ in targets}  # fmt: skip
        trace = TraceInput(
            state.name, state.namespace, state.generation, state.created,
            state.spec, state.parsed.problems, state.status,
        )  # fmt: skip
        outcome = trace_status(
            trace,
            source_id=sid,
            targets=targets,
            reports=self.reports,
            tally=self.ledger.total(sid),
            arches=arches,
            now=self.clock(),
            pending_timeout=self.settings.pending_timeout,
            top_n=self.settings.top_syscalls,
            image_of=self._image_of,
            profiles=self.profiles.containers(sid),
            profiles_omitted=self.profiles.omitted_on(sid),
            left_out=self.index.left_out(sid),
            silent=self.silent(),
        )
        if outcome.deadline is not None:
            self.deadlines[sid] = outcome.deadline
        else:
            self.deadlines.pop(sid, None)
        plan = self._install_plan(state, outcome.profile_files, outcome.status)
        refused = await self._write_install(state, plan)
        new = with_install(outcome.status, plan=plan, uid=state.uid, namespace=state.namespace,
                           trace=state.name, reports=self.reports, now=self.clock(),
                           generation=state.generation, silent=set(self.silent()),
                           publish_error=refused)  # fmt: skip
        old_wire = state.status.to_wire() if state.status else {}
        if old_wire != new.to_wire():
            await self._write_profile(state, new, outcome.profile_files)
            for event in trace_events(state.status, new):  # before the status: see events.py
                await self._emit(state.ref, event, occurrence(old_wire))
            answer = await self.kube.patch_trace_status(
                state.namespace, state.name, _status_patch(state, old_wire, new.to_wire())
            )
            self.writes += 1
            logger.info("ContainerTrace %s/%s: status written (%s)", state.namespace, state.name,
                        _changed_keys(old_wire, new.to_wire()))  # fmt: skip
            current = self.traces.get(sid)
            if current is not None and current.uid == state.uid:
                current.replaced = old_wire
                current.status = _read_status(ContainerTraceStatus, answer)
                _took_answer(current, answer)
                state = current
        if self.traces.get(sid) is state:
            self._place_trace(state)
        await self._write_spo(state, outcome.profile_files)

    def _install_plan(self, state: TraceState, files: Mapping[str, str] | None,
                      status: ContainerTraceStatus) -> InstallPlan | None:  # fmt: skip
        """What the trace installs now (None: it asks for no install). A trace past its
        end installs its profiles as recorded: as this process last wrote them, or rebuilt
        from its status (a new process: the operator restarted, or another replica)."""
        if not _installs(state):
            self.claims.release(state.uid)
            return None
        if files is None:  # a final phase
            files = self.written_profiles.get(state.uid) or self._recorded_files(state, status)
        wanted = install_files(state.name, files)
        held, why = self.claims.claim(Holder(state.uid, f"{state.namespace}/{state.name}"),
                                      wanted)  # fmt: skip
        return InstallPlan(wanted, frozenset(held), why)

    def _recorded_files(self, state: TraceState, status: ContainerTraceStatus
                        ) -> dict[str, str]:  # fmt: skip
        """The profiles a final status holds (every container it lists, every syscall),
        for the architectures of the cluster's nodes (its targets are gone)."""
        request = state.spec.seccomp_profile if state.spec else None
        if request is None or status.seccomp_profile is None:
            return {}
        arches = {labels.get(ARCH_LABEL, DEFAULT_ARCH) for labels in self.index.nodes.values()}
        names = {c.container: [s.name for s in c.syscalls]
                 for c in status.seccomp_profile.containers}  # fmt: skip
        return dict(profile_files(names, request.default_action, arches or {DEFAULT_ARCH}))

    async def _write_install(self, state: TraceState, plan: InstallPlan | None) -> str:
        """The trace's install ConfigMap in the operator's namespace, written when what it
        holds changes, deleted when the trace asks for no install or holds no name.
        Returns why it could not be written ("" when it is): a refusal a retry cannot fix
        (its namespace missing, RBAC) goes to the trace's status, not into a retry loop;
        it is tried again at the trace's next change."""
        assert self.kube is not None
        data = plan.published if plan is not None else {}
        if self.installed.get(state.uid) == data or (not data and state.uid not in self.installed):
            return ""
        name = config_map_name(state.namespace, state.name)
        now = self.clock()
        if not self.install_listed or self.install_error:
            if self.install_error and self.install_retry_at and now >= self.install_retry_at:
                self.install_listed = False  # list again at the next pass
            return self.install_error or "waiting to list podtrace's published profiles"
        version = plan.version if plan else ""
        failed = self.publish_failed.get(state.uid)
        if failed is not None and failed[0] == version and now < failed[1] + PUBLISH_RETRY:
            return failed[2]
        try:
            if data:
                await self._apply_install(state, name, data, version)
            else:
                await self.kube.delete_configmap(self.settings.namespace, name)
        except ApiError as err:
            if err.transient:
                raise
            why = f"ConfigMap {self.settings.namespace}/{name} not written: {err}"
            logger.warning("ContainerTrace %s/%s: %s (again in %s, or for a new version)",
                           state.namespace, state.name, why, PUBLISH_RETRY)  # fmt: skip
            self.publish_failed[state.uid] = (version, now, why)
            return why
        self.publish_failed.pop(state.uid, None)
        self.writes += 1
        current = self.traces.get(state.parsed.id)
        if data and (current is None or current.uid != state.uid):
            self.install_listed = False  # the trace went while it was written: sweep it
            self._poke()
        if data:
            self.installed[state.uid] = dict(data)
            logger.info("ContainerTrace %s/%s: %d profile(s) published for the nodes to "
                        "install", state.namespace, state.name, len(data))  # fmt: skip
        else:
            self.installed.pop(state.uid, None)
            logger.info("ContainerTrace %s/%s: installed profiles removed", state.namespace,
                        state.name)  # fmt: skip
        return ""

    async def _apply_install(self, state: TraceState, name: str, data: Mapping[str, str],
                             version: str) -> None:  # fmt: skip
        assert self.kube is not None
        await self.kube.apply_configmap({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name, "namespace": self.settings.namespace,
                "labels": {**MANAGED_BY, INSTALL_LABEL: "true"},
                "annotations": {TRACE_ANNOTATION: f"{state.namespace}/{state.name}",
                                TRACE_UID_ANNOTATION: state.uid, DIGEST_ANNOTATION: version},
            },
            "data": dict(data),
        })  # fmt: skip

    async def _list_installs(self) -> None:
        """Once after start, a re-list or a trace gone: seed the claims and what is
        published from the install ConfigMaps, and delete those of traces gone (or that
        ask no install any more). Before any install is written, so a name held before
        a restart stays held."""
        assert self.kube is not None
        epoch = self.install_epoch
        existing = await self.kube.list_configmaps(self.settings.namespace, INSTALL_LABEL)
        wanting = {t.uid: t for t in self.traces.values() if _installs(t)}
        self.claims = Claims(self.claims.limit, self.claims.per_namespace)
        self.installed = {}
        for cm in sorted(existing, key=lambda c: c["metadata"].get("creationTimestamp", "")):
            meta = cm["metadata"]
            uid = (meta.get("annotations") or {}).get(TRACE_UID_ANNOTATION, "")
            trace = wanting.get(uid)
            if trace is None:
                await self.kube.delete_configmap(self.settings.namespace, meta["name"])
                self.writes += 1
                logger.info("installed profiles %s removed: their trace is gone or asks no "
                            "install", meta["name"])  # fmt: skip
                continue
            data = dict(cm.get("data") or {})
            self.claims.claim(Holder(uid, f"{trace.namespace}/{trace.name}"), data)
            self.installed[uid] = data
        # A trace that went during the awaits above: list (and sweep) again.
        self.install_listed = epoch == self.install_epoch
        self.install_error, self.install_retry_at = "", None
        self.dirty.sources.update(sid for sid, t in self.traces.items() if _installs(t))
        if not self.install_listed:
            self._poke()

    def _image_of(self, pod_uid: str, container: str) -> str:
        pod = self.index.pods.get(pod_uid)
        return pod.images.get(container, "") if pod is not None else ""

    async def _write_profile(
        self, state: TraceState, new: ContainerTraceStatus, files: Mapping[str, str] | None
    ) -> None:
        """The ConfigMap of the trace's profiles, one key per container name (written when
        they change; server-side apply replaces the data, keys of no container go)."""
        assert self.kube is not None
        profile = new.seccomp_profile
        if profile is None or profile.config_map is None or not files:
            return
        if self.written_profiles.get(state.uid) == files:
            return
        await self.kube.apply_configmap({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": profile.config_map, "namespace": state.namespace,
                "labels": {**MANAGED_BY, "podtrace.io/containertrace": state.name},
                "ownerReferences": [{"apiVersion": API_VERSION, "kind": "ContainerTrace",
                                     "name": state.name, "uid": state.uid}],
            },
            "data": dict(files),
        })  # fmt: skip
        self.written_profiles[state.uid] = dict(files)
        self.writes += 1

    async def _write_spo(self, state: TraceState, files: Mapping[str, str] | None) -> None:
        """Where SPO is installed: the ConfigMap's profiles as SeccompProfiles, one per
        container (server-side apply; written when they change). A refusal that a retry
        cannot fix (403: RBAC without SPO's rule) is logged, not retried until the
        profiles change; 404 (the CRD not served yet, or just removed) is retried."""
        assert self.kube is not None
        api = self.spo
        if api is None or not files or self.written_spo.get(state.uid) == files:
            return
        bodies = seccomp_profiles(api, files, namespace=state.namespace, trace=state.name,
                                  trace_uid=state.uid, owner_api_version=API_VERSION,
                                  managed_by=MANAGED_BY)  # fmt: skip
        if len(bodies) < len(files):
            logger.warning("ContainerTrace %s/%s: %d profile(s) span both byte orders "
                           "(archMap), which SPO's SeccompProfile cannot say; not written "
                           "to SPO", state.namespace, state.name,
                           len(files) - len(bodies))  # fmt: skip
        for body in bodies:
            try:
                await self.kube.apply_seccompprofile(api, body)
            except ApiError as err:
                if err.transient or err.status == 404:
                    raise
                logger.warning("SeccompProfile %s not written: %s", body["metadata"]["name"], err)
                continue
            self.writes += 1
        self.written_spo[state.uid] = dict(files)

    async def _sweep_spo(self, api: SpoApi) -> None:
        """Delete our SeccompProfiles whose trace is gone."""
        assert self.kube is not None
        selector = f"{MANAGED_BY_KEY}={MANAGED_BY[MANAGED_BY_KEY]}"
        existing = await self.kube.list_seccompprofiles(api, selector)
        for namespace, name in orphans(existing, [(t.namespace, t.name)
                                                  for t in self.traces.values()]):  # fmt: skip
            await self.kube.delete_seccompprofile(api, namespace, name)
            self.writes += 1
            logger.info("SeccompProfile %s deleted: its trace is gone", name)

    # -- Events ---------------------------------------------------------------------------------

    async def _emit(self, ref: ObjectRef, spec: EventSpec, key: str) -> None:
        """Raise an Event for the transition `key`; a repeat of an identical one grows that
        Event's series instead, and an Event already raised for `key` is left alone.

        Transient apiserver errors propagate (the transition is retried, and deduplicated
        by `key`); an Event the apiserver refuses is logged and dropped."""
        assert self.kube is not None
        namespace, name = ref.event_namespace, event_name(ref, spec)
        now = datetime.now(UTC)
        try:
            try:
                await self.kube.create_event(new_event(ref, spec, now, self.settings.instance, key))
                self.writes += 1
                return
            except ApiError as err:
                if err.status != 409:
                    raise
            stored = await self.kube.get_event(namespace, name)
            if stored is None:  # expired (TTL) between the two calls: start over
                await self._emit(ref, spec, key)
                return
            if raised_by(stored) == key:
                logger.info("Event %s/%s: already raised for this transition", namespace, name)
                return
            await self.kube.patch_event(namespace, name,
                                        series_patch(next_count(stored), now, key))  # fmt: skip
            self.writes += 1
        except ApiError as err:
            if err.transient:
                raise
            logger.warning("Event %s/%s not written: %s", namespace, name, err)


RESYNC_PATHS: dict[str, str] = {
    "namespace": "/api/v1/namespaces",
    "node": "/api/v1/nodes",
    "pod": "/api/v1/pods",
    "policy": f"{CR}/tracingpolicies",
    "trace": f"{CR}/containertraces",
    "nodetracer": f"{CR}/nodetracers",
}
