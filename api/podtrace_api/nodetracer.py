"""NodeTracer: one per node, named after the node (cluster-scoped, short name nt).

`spec` is written only by the operator: the compiled targets for that node.
`status` is written only by that node's agent: everything a user needs to see
why tracing or enrichment does or does not work on the node, plus the results
per target and source, which the operator merges into ContainerTrace and
TracingPolicy status (so each agent owns its own object and never overwrites
another node's results).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from .base import (
    REASON_PATTERN,
    Conditions,
    Counter,
    DNSLabel,
    Message,
    Model,
    Name,
    list_map,
)
from .containertrace import ExecRecord, TargetState
from .limits import NotAppliedReason
from .observe import ObserveSpec, Rules
from .tracingpolicy import RuleCount

SOURCE_ID_PATTERN = r"^(TracingPolicy/[a-z0-9.-]+|ContainerTrace/[a-z0-9-]+/[a-z0-9.-]+)$"
SourceID = Annotated[str, Field(max_length=320, pattern=SOURCE_ID_PATTERN)]


class SourceKind(StrEnum):
    TRACING_POLICY = "TracingPolicy"
    CONTAINER_TRACE = "ContainerTrace"


class TraceSource(Model):
    """A TracingPolicy or ContainerTrace that asked for tracing on this node,
    with what it observes and its rules."""

    id: SourceID = Field(
        description="TracingPolicy/<name> or ContainerTrace/<namespace>/<name>."
    )
    kind: SourceKind = Field(description="The kind of the asking object.")
    name: Name = Field(description="The asking object's name.")
    namespace: DNSLabel | None = Field(
        default=None, description="The asking object's namespace (ContainerTrace only)."
    )
    generation: Counter = Field(default=0, description="The asking object's generation.")
    observe: ObserveSpec = Field(default_factory=ObserveSpec, description="What to observe.")
    rules: Rules


class NodeTarget(Model):
    """One container on this node to trace, and which sources asked for it."""

    pod_uid: str = Field(min_length=1, max_length=36, description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    namespace: DNSLabel = Field(description="The pod's namespace.")
    pod: Name = Field(description="The pod's name.")
    sources: list[SourceID] = Field(
        min_length=1,
        max_length=64,
        description="Ids of the sources that select this container.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class NodeTracerSpec(Model):
    """The compiled tracing configuration of one node. Written by the operator only."""

    sources: list[TraceSource] = Field(
        default_factory=list,
        max_length=256,
        description="Policies and traces with at least one target on this node.",
        json_schema_extra=list_map("id"),
    )
    targets: list[NodeTarget] = Field(
        default_factory=list,
        max_length=2048,
        description="Containers to trace on this node, sorted by pod UID and container.",
        json_schema_extra=list_map("podUid", "container"),
    )


class BackendName(StrEnum):
    BCC = "bcc"
    FTRACE = "ftrace"
    NONE = "none"


class BackendStatus(Model):
    """The tracing backend in use and why it was chosen."""

    name: BackendName = Field(description="bcc (eBPF), ftrace, or none.")
    reason: Message = Field(default="", description="Why this backend was chosen.")


class KernelStatus(Model):
    """Kernel facts that decide what can be traced."""

    release: str = Field(default="", max_length=128, description="uname -r.")
    btf: bool = Field(default=False, description="Whether /sys/kernel/btf/vmlinux exists.")
    tracefs: str = Field(default="", max_length=256, description="Where tracefs is mounted.")


class CgroupVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"
    UNKNOWN = "unknown"


class CgroupDriver(StrEnum):
    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"
    UNKNOWN = "unknown"


class CgroupStatus(Model):
    """How the node's cgroups are laid out and where the Kubernetes pods live."""

    version: CgroupVersion = Field(default=CgroupVersion.UNKNOWN, description="v1, v2 or hybrid.")
    driver: CgroupDriver = Field(
        default=CgroupDriver.UNKNOWN, description="systemd or cgroupfs (from the kubepods path)."
    )
    root: str = Field(default="", max_length=256, description="The cgroup2 mount the agent uses.")
    host_namespace: bool = Field(
        default=False,
        description="Whether that mount shows the host's whole cgroup hierarchy. False on a "
        "node that runs in a container (kind, minikube's docker driver, k3d): then "
        "namespaceRoot says where the mount sits, and tracing works the same.",
    )
    namespace_root: str = Field(
        default="",
        max_length=1024,
        description="Where root sits in the host's cgroup2 hierarchy: / for the host's "
        "root, the node container's cgroup (an absolute path) for a nested node, empty "
        "when unknown.",
    )
    kubepods_path: str = Field(
        default="", max_length=512, description="The kubepods cgroup, relative to root."
    )
    kubepods_id: Counter | None = Field(default=None, description="The kubepods cgroup's ID.")
    kubepods_level: Counter | None = Field(
        default=None,
        description="The kubepods cgroup's absolute depth in the host's hierarchy (its "
        "root is 0), as the kernel counts it, also below a namespaceRoot.",
    )
    message: Message = Field(default="", description="What is wrong and what to change.")


class RuntimeCandidate(Model):
    """A container runtime endpoint that was tried."""

    endpoint: str = Field(max_length=512, description="The socket tried.")
    reason: Message = Field(description="Why it was not used.")


class RuntimeStatus(Model):
    """The container runtime used for enrichment."""

    name: str = Field(default="", max_length=64, description="e.g. containerd, cri-o.")
    version: str = Field(default="", max_length=128, description="The runtime's version.")
    api_version: str = Field(default="", max_length=64, description="The CRI API version.")
    endpoint: str = Field(default="", max_length=512, description="The socket in use.")
    candidates: list[RuntimeCandidate] = Field(
        default_factory=list,
        max_length=32,
        description="Endpoints tried and rejected, with the reason.",
    )


class MapUsage(Model):
    """Fill level of one BPF map."""

    name: str = Field(max_length=64, description="The map's name.")
    used: Counter = Field(description="Entries in use.")
    capacity: Counter = Field(description="Maximum entries.")


class IdentitySource(StrEnum):
    CRI = "cri"
    CGROUP_PATH = "cgroup-path"
    KUBERNETES = "kubernetes"


class SourceResult(Model):
    """What one container did, for one source."""

    source: SourceID = Field(description="The source these results belong to.")
    syscalls: dict[Annotated[str, Field(max_length=64)], Counter] = Field(
        default_factory=dict,
        max_length=512,
        description="Syscall counts by name.",
    )
    syscalls_total: Counter = Field(default=0, description="All syscalls counted.")
    execs: list[ExecRecord] = Field(
        default_factory=list, max_length=64, description="Executed programs."
    )
    execs_total: Counter = Field(default=0, description="Execs observed.")
    rule_matches: list[RuleCount] = Field(
        default_factory=list,
        max_length=32,
        description="Rule matches by rule.",
        json_schema_extra=list_map("rule"),
    )


class NotApplied(Model):
    """A source the agent did not apply to a container, and why."""

    source: SourceID = Field(description="The source that is not applied.")
    reason: NotAppliedReason = Field(
        description="LimitExceeded (the source asks more than the kernel side can do), "
        "CapacityExceeded (a node table is full; retried) or ApplyFailed (retried)."
    )
    message: Message = Field(default="", description="What exactly did not fit or failed.")


class SourceApplyStatus(Model):
    """How one source of the spec is applied on this node."""

    source: SourceID = Field(description="The source.")
    targets: Counter = Field(default=0, description="Containers of this node it selects.")
    applied: Counter = Field(default=0, description="Containers it is traced in now.")
    not_applied: Counter = Field(
        default=0, description="Containers it is not applied to (see reason and message)."
    )
    reason: NotAppliedReason | None = Field(
        default=None, description="Why, when it is not applied to some container."
    )
    message: Message = Field(default="", description="The first container's reason in words.")


class NodeTargetStatus(Model):
    """One target as the agent sees it."""

    pod_uid: str = Field(min_length=1, max_length=36, description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    container_id: str = Field(default="", max_length=128, description="The runtime's ID.")
    image: str = Field(default="", max_length=512, description="The container's image.")
    cgroup_id: Counter | None = Field(default=None, description="The container's cgroup ID.")
    identity: IdentitySource | None = Field(
        default=None, description="Where the identity came from: cri, cgroup-path or kubernetes."
    )
    state: TargetState = Field(default=TargetState.PENDING, description="Tracing state.")
    since: datetime | None = Field(default=None, description="When tracing started.")
    reason: str | None = Field(
        default=None,
        max_length=64,
        pattern=REASON_PATTERN,
        description="Why the target is not traced, as a CamelCase reason (e.g. "
        "CapacityExceeded).",
    )
    message: Message = Field(default="", description="Why the target is not traced, if not.")
    not_applied: list[NotApplied] = Field(
        default_factory=list,
        max_length=64,
        description="Sources of this target the agent did not apply, with the reason; the "
        "others trace it.",
        json_schema_extra=list_map("source"),
    )
    results: list[SourceResult] = Field(
        default_factory=list,
        max_length=64,
        description="Results per source.",
        json_schema_extra=list_map("source"),
    )


class NodeTracerStatus(Model):
    """The node agent's report. Written by that node's agent only."""

    observed_generation: Counter | None = Field(
        default=None, description="The .metadata.generation the agent applied."
    )
    conditions: Conditions
    last_heartbeat_time: datetime | None = Field(
        default=None, description="When the agent last reported."
    )
    agent_version: str = Field(default="", max_length=64, description="The agent's version.")
    backend: BackendStatus | None = Field(default=None, description="The tracing backend.")
    kernel: KernelStatus | None = Field(default=None, description="Kernel facts.")
    cgroup: CgroupStatus | None = Field(default=None, description="cgroup discovery.")
    runtime: RuntimeStatus | None = Field(default=None, description="Container runtime.")
    traced_containers: Counter = Field(default=0, description="Containers traced now.")
    events_seen: Counter = Field(default=0, description="Events received from the kernel.")
    events_dropped: Counter = Field(
        default=0, description="Events lost because a buffer was full."
    )
    capacity_exceeded: Counter = Field(
        default=0,
        description="Targets with a source not applied because a node table is full.",
    )
    sources: list[SourceApplyStatus] = Field(
        default_factory=list,
        max_length=256,
        description="How each source of the spec is applied on this node.",
        json_schema_extra=list_map("source"),
    )
    maps: list[MapUsage] = Field(
        default_factory=list,
        max_length=16,
        description="BPF map usage.",
        json_schema_extra=list_map("name"),
    )
    targets: list[NodeTargetStatus] = Field(
        default_factory=list,
        max_length=2048,
        description="The targets of the spec as the agent sees them.",
        json_schema_extra=list_map("podUid", "container"),
    )


class NodeTracer(Model):
    """The tracing configuration and the agent's report for one node, named
    after the node."""

    KIND: ClassVar[str] = "NodeTracer"
    PLURAL: ClassVar[str] = "nodetracers"
    SHORT_NAMES: ClassVar[list[str]] = ["nt"]
    NAMESPACED: ClassVar[bool] = False
    PRINTER_COLUMNS: ClassVar[list[dict[str, str]]] = [
        {"name": "Ready", "type": "string",
         "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Backend", "type": "string", "jsonPath": ".status.backend.name"},
        {"name": "Runtime", "type": "string", "jsonPath": ".status.runtime.name"},
        {"name": "Cgroup", "type": "string", "jsonPath": ".status.cgroup.version"},
        {"name": "Traced", "type": "integer", "jsonPath": ".status.tracedContainers"},
        {"name": "Dropped", "type": "integer", "jsonPath": ".status.eventsDropped"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    spec: NodeTracerSpec = Field(
        default_factory=NodeTracerSpec, description="Compiled configuration (operator-owned)."
    )
    status: NodeTracerStatus | None = Field(
        default=None, description="The agent's report (agent-owned)."
    )
