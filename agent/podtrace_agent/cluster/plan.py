"""Planning: from the NodeTracer spec, the pods on this node and the container
cgroups the agent knows, decide which cgroup to trace with which probes, and
the state of every target. Pure; the agent loop applies the plan to the backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from podtrace_api.containertrace import TargetState
from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodeconfig import Probe, combined_mask
from podtrace_api.nodetracer import NodeTarget, NodeTracerSpec, TraceSource

from ..backend import SourceLimits
from .limits import open_prefixes, source_problem

TargetKey = tuple[str, str]  # (pod UID, container name)


@dataclass(frozen=True)
class PodContainer:
    """A container as the pod's status shows it."""

    container_id: str | None  # without the runtime scheme; None until it started
    image: str = ""
    running: bool = False


@dataclass(frozen=True)
class PodView:
    """The parts of a Pod on this node the agent needs."""

    uid: str
    namespace: str
    name: str
    containers: Mapping[str, PodContainer] = field(default_factory=dict)


@dataclass(frozen=True)
class CgroupRef:
    """A container cgroup the agent has seen (scan or mkdir)."""

    cgroup_id: int
    path: str


@dataclass(frozen=True)
class TraceRequest:
    """What to program into the backend for one cgroup."""

    path: str
    mask: Probe
    open_prefixes: tuple[str, ...] = ()
    connect_ports: tuple[int, ...] = ()  # empty: every port
    sources: tuple[str, ...] = ()  # ids of the sources it was built from


@dataclass(frozen=True)
class Rejection:
    """Why a source is not applied to a target."""

    reason: NotAppliedReason
    message: str


@dataclass(frozen=True)
class TargetPlan:
    """One target's state and, when traced, its cgroup."""

    target: NodeTarget
    state: TargetState
    message: str = ""
    reason: str = ""
    container_id: str = ""
    image: str = ""
    cgroup_id: int | None = None


@dataclass(frozen=True)
class Plan:
    traces: dict[int, TraceRequest]
    targets: dict[TargetKey, TargetPlan]
    cgroup_targets: dict[int, TargetKey]  # whose container a cgroup is
    # Sources of a target that cannot be applied whatever the tables hold.
    not_applied: dict[TargetKey, dict[str, Rejection]] = field(default_factory=dict)


def strip_runtime_scheme(container_id: str) -> str:
    """`containerd://abc` → `abc`, as pod status reports container IDs.

    >>> strip_runtime_scheme("cri-o://0f3a")
    '0f3a'
    """
    return container_id.split("://", 1)[-1]


def trace_request(path: str, sources: list[TraceSource]) -> TraceRequest:
    """What to program for a cgroup that `sources` select: the union of their probes,
    prefixes and ports (no port filter when one of them wants every port)."""
    prefixes: set[str] = set()
    ports: set[int] = set()
    all_ports = False
    for source in sources:
        prefixes.update(open_prefixes(source))
        if source.observe.connects is not None:
            if source.observe.connects.ports:
                ports.update(source.observe.connects.ports)
            else:
                all_ports = True
    return TraceRequest(
        path=path,
        mask=combined_mask((s.observe, s.rules) for s in sources),
        open_prefixes=tuple(sorted(prefixes)),
        connect_ports=() if all_ports else tuple(sorted(ports)),
        sources=tuple(sorted(s.id for s in sources)),
    )


def plan(
    spec: NodeTracerSpec,
    pods: Mapping[str, PodView],
    cgroups: Mapping[str, CgroupRef],
    named: Mapping[TargetKey, str] | None = None,
    limits: SourceLimits | None = None,
) -> Plan:
    """Decide what to trace. `pods` by UID; `cgroups` by container ID; `named`:
    container IDs the runtime (CRI) named, by pod UID and container name — known
    as soon as the cgroup appears, before the Pod's status catches up. A source
    over the backend's `limits` is left out of every request and reported."""
    named = named or {}
    sources = {s.id: s for s in spec.sources}
    problems = {sid: source_problem(s, limits or SourceLimits()) for sid, s in sources.items()}
    traces: dict[int, TraceRequest] = {}
    targets: dict[TargetKey, TargetPlan] = {}
    cgroup_targets: dict[int, TargetKey] = {}
    not_applied: dict[TargetKey, dict[str, Rejection]] = {}
    for target in spec.targets:
        key = (target.pod_uid, target.container)
        pod = pods.get(target.pod_uid)
        container = pod.containers.get(target.container) if pod else None
        from_cri = named.get(key)
        if from_cri and (container is None or container.container_id != from_cri):
            # The runtime knows a (newer) container for this name: it is running.
            image = container.image if container else ""
            container = PodContainer(from_cri, image, running=True)
            pod = pod or PodView(target.pod_uid, target.namespace, target.pod)
        if pod is None:
            targets[key] = TargetPlan(target, TargetState.PENDING, "pod not seen on this node yet",
                                      "PodNotSeen")
            continue
        if container is None or not container.container_id:
            targets[key] = TargetPlan(
                target, TargetState.PENDING, "container has not started yet", "NotStarted",
                image=container.image if container else "",
            )
            continue
        ref = cgroups.get(container.container_id)
        if ref is None:
            targets[key] = TargetPlan(
                target, TargetState.PENDING if container.running else TargetState.ENDED,
                f"no cgroup for container {container.container_id[:13]} under kubepods"
                if container.running else "container is not running",
                "NoCgroup" if container.running else "NotRunning",
                container_id=container.container_id, image=container.image,
            )
            continue
        rejected = {
            sid: Rejection(NotAppliedReason.LIMIT_EXCEEDED, problem)
            for sid in target.sources if (problem := problems.get(sid))
        }
        if rejected:
            not_applied[key] = rejected
        wanted = [sources[s] for s in target.sources if s in sources and s not in rejected]
        if not wanted:
            first = next(iter(rejected.values()), None)
            targets[key] = TargetPlan(
                target, TargetState.PENDING, first.message if first else "no source to apply",
                NotAppliedReason.LIMIT_EXCEEDED.value,
                container_id=container.container_id, image=container.image,
            )
            continue
        request = trace_request(ref.path, wanted)
        previous = traces.get(ref.cgroup_id)
        if previous is not None:  # two targets cannot share a cgroup; keep the union
            request = TraceRequest(
                ref.path, previous.mask | request.mask,
                tuple(sorted(set(previous.open_prefixes) | set(request.open_prefixes))),
                () if not previous.connect_ports or not request.connect_ports
                else tuple(sorted(set(previous.connect_ports) | set(request.connect_ports))),
                tuple(sorted(set(previous.sources) | set(request.sources))),
            )
        traces[ref.cgroup_id] = request
        cgroup_targets[ref.cgroup_id] = key
        targets[key] = TargetPlan(
            target, TargetState.TRACING, container_id=container.container_id,
            image=container.image, cgroup_id=ref.cgroup_id,
        )
    return Plan(traces=traces, targets=targets, cgroup_targets=cgroup_targets,
                not_applied=not_applied)


def pod_view(pod: Mapping) -> PodView:
    """The PodView of a Pod object (a dict as the API returns it).

    Init containers are included: a policy may select them by name.
    """
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    spec = pod.get("spec", {}) or {}
    images = {c["name"]: c.get("image", "") for c in spec.get("containers", []) or []}
    images.update({c["name"]: c.get("image", "") for c in spec.get("initContainers", []) or []})
    containers: dict[str, PodContainer] = {
        name: PodContainer(None, image) for name, image in images.items()
    }
    for entry in [*(status.get("initContainerStatuses") or []),
                  *(status.get("containerStatuses") or [])]:
        raw_id = entry.get("containerID") or ""
        containers[entry["name"]] = PodContainer(
            container_id=strip_runtime_scheme(raw_id) if raw_id else None,
            image=entry.get("image") or images.get(entry["name"], ""),
            running="running" in (entry.get("state") or {}),
        )
    return PodView(
        uid=meta.get("uid", ""),
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        containers=containers,
    )
