"""NodeTracer: one per node, named after the node (cluster-scoped, short name nt).

`spec` is written only by the operator: the compiled targets for that node.
`status` is written only by that node's agent: everything a user needs to see
why tracing or enrichment does or does not work on the node, plus the results
per source, which the operator merges into ContainerTrace and TracingPolicy
status (so each agent owns its own object and never overwrites another node's
results).

The status stays within `budget.STATUS_BUDGET_BYTES` however full the node is
(`MAX_NODE_TARGETS` containers, `MAX_NODE_SOURCES` sources): a container's
results are kept once by the agent and each source reports what its containers
did since it began tracing them, summed over the node, with the most frequent
syscalls and programs by name and counts of what was left out.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from .base import (
    ATOMIC,
    MAX_MESSAGE,
    REASON_PATTERN,
    Condition,
    Counter,
    DNSLabel,
    Model,
    Name,
    ShortText,
    list_map,
    plain_text,
)
from .budget import (
    MAX_INSTALLED_TRACES,
    MAX_NODE_PROFILES,
    MAX_NODE_SOURCES,
    MAX_NODE_TARGETS,
    MAX_NOT_APPLIED_ROWS,
    TOP_EXECS,
    TOP_SYSCALLS,
)
from .containertrace import ExecRecord, PodUID, SyscallCount, TargetState
from .limits import NotAppliedReason
from .observe import ObserveSpec, Rules
from .syscallset import MAX_CHARS as SYSCALL_SET_CHARS
from .syscallset import PATTERN as SYSCALL_SET_PATTERN
from .tracingpolicy import RuleCount

MAX_RUNTIME_CANDIDATES = 16
ShortLabel = plain_text(64)
MediumText = plain_text(128)
PathText = plain_text(512)
LongText = plain_text(MAX_MESSAGE)
InstallMessage = plain_text(128)
MAX_INSTALL_FAILURES = 8
# <trace UID>:<digest> (seccompinstall.digest) of one trace's installed profiles
InstalledVersion = Annotated[str, Field(max_length=53,
                                        pattern=r"^[A-Za-z0-9-]{1,36}:[0-9a-f]{16}$")]

SOURCE_ID_PATTERN = r"^(TracingPolicy/[a-z0-9.-]+|ContainerTrace/[a-z0-9-]+/[a-z0-9.-]+)$"
SourceID = Annotated[str, Field(max_length=320, pattern=SOURCE_ID_PATTERN)]


# Why a target is not Tracing, in words (NodeTargetStatus.reason).
TARGET_REASONS: dict[str, str] = {
    "PodNotSeen": "the agent has not seen the pod on its node yet",
    "NotStarted": "the container has not started yet",
    "NoCgroup": "the container runs but its cgroup was not found under kubepods",
    "NotRunning": "the container is not running",
    NotAppliedReason.LIMIT_EXCEEDED: "every source of the container asks more than the "
    "kernel side can do (status.notApplied says what)",
    NotAppliedReason.CAPACITY_EXCEEDED: "a table of the node is full (retried)",
    NotAppliedReason.APPLY_FAILED: "the backend refused every source (retried)",
}


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
    profile: bool = Field(
        default=False,
        description="The source builds a seccomp profile: the agent reports the workload "
        "syscalls of each of its targets in status.profiles.",
    )


class NodeTarget(Model):
    """One container on this node to trace, and which sources asked for it."""

    pod_uid: PodUID = Field(min_length=1, description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    namespace: DNSLabel = Field(description="The pod's namespace.")
    pod: Name = Field(description="The pod's name.")
    sources: list[SourceID] = Field(
        min_length=1,
        max_length=MAX_NODE_SOURCES,
        description="Ids of the sources that select this container.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class NodeTracerSpec(Model):
    """The compiled tracing configuration of one node. Written by the operator only."""

    sources: list[TraceSource] = Field(
        default_factory=list,
        max_length=MAX_NODE_SOURCES,
        description="Policies and traces with at least one target on this node, by id.",
        json_schema_extra=ATOMIC,
    )
    targets: list[NodeTarget] = Field(
        default_factory=list,
        max_length=MAX_NODE_TARGETS,
        description="Containers to trace on this node, sorted by pod UID and container.",
        json_schema_extra=ATOMIC,
    )


class BackendName(StrEnum):
    BCC = "bcc"
    FTRACE = "ftrace"
    NONE = "none"


class BackendStatus(Model):
    """The tracing backend in use and why it was chosen."""

    name: BackendName = Field(description="bcc (eBPF), ftrace, or none.")
    reason: ShortText = Field(default="", description="Why this backend was chosen.")


class KernelStatus(Model):
    """Kernel facts that decide what can be traced."""

    release: MediumText = Field(default="", description="uname -r.")
    btf: bool = Field(default=False, description="Whether /sys/kernel/btf/vmlinux exists.")
    tracefs: ShortText = Field(default="", description="Where tracefs is mounted.")


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
    root: ShortText = Field(default="", description="The cgroup2 mount the agent uses.")
    host_namespace: bool = Field(
        default=False,
        description="Whether that mount shows the host's whole cgroup hierarchy. False on a "
        "node that runs in a container (kind, minikube's docker driver, k3d): then "
        "namespaceRoot says where the mount sits, and tracing works the same.",
    )
    namespace_root: LongText = Field(
        default="",
        description="Where root sits in the host's cgroup2 hierarchy: / for the host's "
        "root, the node container's cgroup (an absolute path) for a nested node, empty "
        "when unknown.",
    )
    kubepods_path: PathText = Field(
        default="", description="The kubepods cgroup, relative to root."
    )
    kubepods_id: Counter | None = Field(default=None, description="The kubepods cgroup's ID.")
    kubepods_level: Counter | None = Field(
        default=None,
        description="The kubepods cgroup's absolute depth in the host's hierarchy (its "
        "root is 0), as the kernel counts it, also below a namespaceRoot.",
    )
    message: LongText = Field(default="", description="What is wrong and what to change.")


class RuntimeCandidate(Model):
    """A container runtime endpoint that was tried."""

    endpoint: ShortText = Field(description="The socket tried.")
    reason: PathText = Field(description="Why it was not used.")


class RuntimeStatus(Model):
    """The container runtime used for enrichment."""

    name: ShortLabel = Field(default="", description="e.g. containerd, cri-o.")
    version: MediumText = Field(default="", description="The runtime's version.")
    api_version: ShortLabel = Field(default="", description="The CRI API version.")
    endpoint: ShortText = Field(default="", description="The socket in use.")
    candidates: list[RuntimeCandidate] = Field(
        default_factory=list,
        max_length=MAX_RUNTIME_CANDIDATES,
        description="Endpoints tried and rejected, with the reason.",
    )


class MapUsage(Model):
    """Fill level of one BPF map."""

    name: ShortLabel = Field(description="The map's name.")
    used: Counter = Field(description="Entries in use.")
    capacity: Counter = Field(description="Maximum entries.")


class IdentitySource(StrEnum):
    CRI = "cri"
    CGROUP_PATH = "cgroup-path"
    KUBERNETES = "kubernetes"


class SourceResult(Model):
    """What the containers of this node did for one source, since the source began
    tracing each of them (a container it traced before, left and traced again is
    counted for the times it was traced), summed over them for as long as the
    agent runs."""

    since: datetime | None = Field(
        default=None,
        description="When the agent began counting for this source. A new value means "
        "the counting started over (the agent restarted).",
    )
    syscalls: list[SyscallCount] = Field(
        default_factory=list,
        max_length=TOP_SYSCALLS,
        description=f"The {TOP_SYSCALLS} most frequent syscalls, most frequent first.",
    )
    syscalls_total: Counter = Field(default=0, description="All syscalls counted.")
    syscalls_omitted: Counter = Field(
        default=0, description="Distinct syscalls counted but left out of syscalls."
    )
    syscall_set: str = Field(
        default="",
        max_length=SYSCALL_SET_CHARS,
        pattern=SYSCALL_SET_PATTERN,
        description="Every syscall counted, listed or not: a bitmap of the node's syscall "
        "numbers in base64 (bit n of byte n/8 is syscall n), for seccomp profiles.",
    )
    execs: list[ExecRecord] = Field(
        default_factory=list,
        max_length=TOP_EXECS,
        description=f"The {TOP_EXECS} most executed programs, most executed first.",
    )
    execs_total: Counter = Field(default=0, description="Execs observed.")
    execs_omitted: Counter = Field(
        default=0, description="Execs of programs left out of execs (execsTotal minus the "
        "counts listed)."
    )
    rule_matches: list[RuleCount] = Field(
        default_factory=list,
        max_length=32,
        description="Rule matches by rule.",
        json_schema_extra=list_map("rule"),
    )
    events_lost: Counter = Field(
        default=0,
        description="Events of these containers the backend lost while this source traced "
        "them (ftrace: its buffer overran). When not 0, the counts above are lower than "
        "what happened and a syscall may be missing.",
    )


class NotApplied(Model):
    """A source the agent did not apply to a container, and why."""

    pod_uid: PodUID = Field(min_length=1, description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    source: SourceID = Field(description="The source that is not applied.")
    reason: NotAppliedReason = Field(
        description="LimitExceeded (the source asks more than the kernel side can do), "
        "CapacityExceeded (a node table is full; retried) or ApplyFailed (retried)."
    )
    message: ShortText = Field(default="", description="What exactly did not fit or failed.")


class SourceApplyStatus(Model):
    """One source on this node: how it is applied, and what it observed."""

    source: SourceID = Field(description="The source.")
    targets: Counter = Field(default=0, description="Containers of this node it selects.")
    applied: Counter = Field(default=0, description="Containers it is traced in now.")
    not_applied: Counter = Field(
        default=0, description="Containers it is not applied to (see reason and message)."
    )
    reason: NotAppliedReason | None = Field(
        default=None, description="Why, when it is not applied to some container."
    )
    message: ShortText = Field(default="", description="The first container's reason in words.")
    results: SourceResult | None = Field(
        default=None,
        description="What its containers did. Kept for a while after the source leaves the "
        "spec, so that nothing counted is lost before the operator reads it.",
    )


class NodeTargetStatus(Model):
    """One target as the agent sees it."""

    pod_uid: PodUID = Field(min_length=1, description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    container_id: ShortLabel = Field(default="", description="The runtime's ID.")
    cgroup_id: Counter | None = Field(default=None, description="The container's cgroup ID.")
    identity: IdentitySource | None = Field(
        default=None, description="Where the identity came from: cri, cgroup-path or kubernetes."
    )
    state: TargetState = Field(default=TargetState.PENDING, description="Tracing state.")
    since: datetime | None = Field(default=None, description="When tracing started.")
    reason: str | None = Field(
        default=None,
        max_length=32,
        pattern=REASON_PATTERN,
        description="Why the target is not traced, as a CamelCase reason: "
        + "; ".join(f"{r}: {w}" for r, w in TARGET_REASONS.items()) + ".",
    )
    not_applied: list[NotAppliedReason] = Field(
        default_factory=list,
        max_length=len(NotAppliedReason),
        description="Why sources of this target are not applied (the others trace it); "
        "which ones: status.notApplied.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    events_lost: Counter = Field(
        default=0,
        description="Events of this container the backend lost (ftrace: its buffer "
        "overran). When not 0, its counts are incomplete.",
    )


class TargetProfile(Model):
    """The syscalls one target's workload made (for seccomp profiles): those counted
    after the runtime's last set-up step (runc init's prctl(PR_GET_PDEATHSIG)), over
    every container the target had, since the agent began tracing it."""

    pod_uid: PodUID = Field(min_length=1, description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    syscall_set: str = Field(
        default="",
        max_length=SYSCALL_SET_CHARS,
        pattern=SYSCALL_SET_PATTERN,
        description="The workload's syscalls: a bitmap of the node's syscall numbers in "
        "base64 (bit n of byte n/8 is syscall n).",
    )
    start_seen: bool = Field(
        default=False,
        description="Whether the container's start was seen (the runtime's marker): false "
        "for a container that ran before it was traced, whose start-up syscalls are missing.",
    )


class InstallFailure(Model):
    """A trace whose profiles this node's agent could not write, and why."""

    uid: PodUID = Field(min_length=1, description="The trace's UID.")
    message: InstallMessage = Field(description="What failed.")


class SeccompInstallStatus(Model):
    """Profiles this node's agent installed in the kubelet's seccomp directory for pods to
    use as Localhost profiles (ContainerTrace spec.seccompProfile.install)."""

    directory: InstallMessage = Field(
        default="",
        description="The kubelet's seccomp directory as the agent sees it (empty: the agent "
        "runs without --seccomp-dir and installs nothing).",
    )
    message: InstallMessage = Field(default="", description="Why nothing is installed, if so.")
    installed: list[InstalledVersion] = Field(
        default_factory=list,
        max_length=MAX_INSTALLED_TRACES,
        description="Per trace whose profiles are written: <trace UID>:<digest of the "
        "version written>.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    failed: list[InstallFailure] = Field(
        default_factory=list,
        max_length=MAX_INSTALL_FAILURES,
        description=f"Traces whose profiles are not (all) written, with why: the first "
        f"{MAX_INSTALL_FAILURES} by UID.",
        json_schema_extra=ATOMIC,
    )


class NodeTracerStatus(Model):
    """The node agent's report, written by that node's agent; the operator only sets
    condition Ready to Unknown when the agent stops sending heartbeats."""

    observed_generation: Counter | None = Field(
        default=None, description="The .metadata.generation the agent applied."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Standard conditions describing the object's state.",
        json_schema_extra=list_map("type"),
    )
    last_heartbeat_time: datetime | None = Field(
        default=None, description="When the agent last reported."
    )
    agent_version: ShortLabel = Field(default="", description="The agent's version.")
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
        max_length=MAX_NODE_SOURCES,
        description="How each source of the spec is applied on this node, and its results.",
        json_schema_extra=ATOMIC,
    )
    maps: list[MapUsage] = Field(
        default_factory=list,
        max_length=16,
        description="BPF map usage.",
        json_schema_extra=ATOMIC,
    )
    targets: list[NodeTargetStatus] = Field(
        default_factory=list,
        max_length=MAX_NODE_TARGETS,
        description="The targets of the spec as the agent sees them, by pod UID and "
        "container.",
        json_schema_extra=ATOMIC,
    )
    not_applied: list[NotApplied] = Field(
        default_factory=list,
        max_length=MAX_NOT_APPLIED_ROWS,
        description=f"Sources not applied to a container, with the reason: the first "
        f"{MAX_NOT_APPLIED_ROWS} by pod UID and container.",
        json_schema_extra=ATOMIC,
    )
    not_applied_omitted: Counter = Field(
        default=0, description="Sources not applied to a container left out of notApplied."
    )
    profiles: list[TargetProfile] = Field(
        default_factory=list,
        max_length=MAX_NODE_PROFILES,
        description=f"The workload syscalls of the targets of sources that build a seccomp "
        f"profile: the first {MAX_NODE_PROFILES} by pod UID and container.",
        json_schema_extra=ATOMIC,
    )
    profiles_omitted: Counter = Field(
        default=0, description="Targets of profile sources left out of profiles."
    )
    seccomp_profiles: SeccompInstallStatus | None = Field(
        default=None, description="Seccomp profiles installed on this node for pods to use."
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
        default=None, description="The agent's report (agent-owned; the operator sets "
        "Ready Unknown when the agent's heartbeats stop)."
    )
