"""ContainerTrace: a namespace owner's request to trace their own pods
(namespaced, short name ct). It has no namespace field on purpose: it can only
ever select pods in the namespace it lives in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import ConfigDict, Field

from .base import (
    ATOMIC,
    DURATION_PATTERN,
    SYSCALL_NAME_PATTERN,
    Conditions,
    Counter,
    DNSLabel,
    LabelSelector,
    Message,
    Model,
    Name,
    ShortText,
    cel,
    plain_text,
)
from .limits import SYSCALL_NUMBERS
from .observe import ObserveSpec

# A pod's UID (a UUID), as status reports it.
PodUID = Annotated[str, Field(max_length=36, pattern=r"^[A-Za-z0-9-]*$")]
# An exec filename as status shows it: plain text (budget.plain), at most this long.
EXEC_FILENAME_CHARS = 255
# Nodes listed by name as having a trace's installed profiles (the rest counted), and
# nodes listed with why they do not have them yet.
MAX_INSTALLED_NODES = 32
MAX_INSTALL_PROBLEMS = 8
# Container names whose profile status lists (the ConfigMap holds every one), and the
# syscalls one profile can allow (every number the node's bitmaps carry).
MAX_PROFILE_CONTAINERS = 8
MAX_PROFILE_SYSCALLS = SYSCALL_NUMBERS
ContainerID = plain_text(128)
ExecFilename = plain_text(EXEC_FILENAME_CHARS)


class SeccompAction(StrEnum):
    ERRNO = "SCMP_ACT_ERRNO"
    KILL_PROCESS = "SCMP_ACT_KILL_PROCESS"
    KILL_THREAD = "SCMP_ACT_KILL_THREAD"
    TRAP = "SCMP_ACT_TRAP"
    LOG = "SCMP_ACT_LOG"


class SeccompProfileRequest(Model):
    """Generate a seccomp profile that allows exactly the syscalls observed."""

    default_action: SeccompAction = Field(
        default=SeccompAction.ERRNO,
        description="Action for syscalls that were not observed.",
    )
    config_map_name: Name | None = Field(
        default=None,
        description="ConfigMap (in this namespace) that receives the profile JSON; "
        "defaults to <trace name>-seccomp.",
    )
    install: bool = Field(
        default=False,
        description="Also install the profiles on every node, in the kubelet's seccomp "
        "directory, so pods can use them with seccompProfile type Localhost and "
        "localhostProfile podtrace/<namespace>/<trace>-<container>.json (status lists "
        "each container's path and the nodes that have it). Removed from the nodes when "
        "the trace is deleted or this is set to false.",
    )


class ContainerTraceSpec(Model):
    """Which of this namespace's pods to trace, for how long, and what to record."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.seccompProfile) || self.observe.syscalls.mode == 'All'",
                "seccompProfile needs observe.syscalls.mode All: a profile built from a "
                "subset of syscalls would deny the rest",
                ".seccompProfile",
            )
        )
    )

    selector: LabelSelector = Field(
        description="Selects pods of this namespace by their labels."
    )
    container: DNSLabel | None = Field(
        default=None, description="Trace only this container; absent means every container."
    )
    duration: str | None = Field(
        default=None,
        max_length=32,
        pattern=DURATION_PATTERN,
        description="How long to trace, e.g. 10m or 1h30m; absent means until deleted.",
    )
    observe: ObserveSpec = Field(
        default_factory=ObserveSpec, description="What to observe in the selected containers."
    )
    seccomp_profile: SeccompProfileRequest | None = Field(
        default=None, description="Generate a seccomp profile from what was observed."
    )


class TracePhase(StrEnum):
    PENDING = "Pending"
    TRACING = "Tracing"
    COMPLETED = "Completed"
    FAILED = "Failed"


class TargetState(StrEnum):
    PENDING = "Pending"
    TRACING = "Tracing"
    ENDED = "Ended"
    FAILED = "Failed"


class TracedTarget(Model):
    """One container being traced."""

    node: Name = Field(description="The node the container runs on.")
    pod: Name = Field(description="The pod's name.")
    pod_uid: PodUID = Field(description="The pod's UID.")
    container: DNSLabel = Field(description="The container's name.")
    container_id: ContainerID = Field(
        default="", description="The runtime's container ID."
    )
    image: ShortText = Field(default="", description="The container's image.")
    cgroup_id: Counter | None = Field(default=None, description="The container's cgroup ID.")
    state: TargetState = Field(default=TargetState.PENDING, description="Tracing state.")
    since: datetime | None = Field(default=None, description="When tracing started.")
    message: ShortText = Field(default="", description="Why the target is not traced, if not.")
    events_lost: Counter = Field(
        default=0,
        description="Events of this container its node's backend lost (ftrace: its buffer "
        "overran). When not 0, its counts are incomplete.",
    )


class SyscallCount(Model):
    """How often one syscall was called."""

    name: str = Field(max_length=40, pattern=SYSCALL_NAME_PATTERN,
                      description="The syscall's name.")
    count: Counter = Field(description="Calls observed.")


class SyscallHistogram(Model):
    """Syscalls by name across all targets: the most frequent, plus totals."""

    total: Counter = Field(default=0, description="All syscalls observed.")
    distinct: Counter = Field(default=0, description="Distinct syscalls observed.")
    top: list[SyscallCount] = Field(
        default_factory=list,
        max_length=64,
        description="The most frequent syscalls, most frequent first.",
    )


class ExecRecord(Model):
    """A program that was executed."""

    filename: ExecFilename = Field(
        description="The executed file; a character JSON would escape (not printable "
        "ASCII, or one of \" \\ < > &) as %XX of its UTF-8 bytes."
    )
    count: Counter = Field(description="How often it was executed.")
    container: DNSLabel | None = Field(
        default=None, description="The container it was executed in (first seen)."
    )
    first_seen: datetime | None = Field(default=None, description="First execution.")


class SyscallCoverage(Model):
    """One syscall of a container's profile and how many traced replicas made it."""

    name: str = Field(max_length=40, pattern=r"^[a-z_][a-z0-9_]*$",
                      description="The syscall's name (libseccomp's, e.g. _sysctl).")
    replicas: Counter = Field(description="Traced replicas of the container that made it.")


class ContainerProfile(Model):
    """The profile of one container name: the union over its traced replicas."""

    container: DNSLabel = Field(description="The container's name.")
    key: str = Field(
        max_length=68, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.json$",
        description="The ConfigMap key holding its profile JSON: <container>.json.",
    )
    replicas: Counter = Field(default=0, description="Traced replicas the profile is built from.")
    start_seen: Counter = Field(
        default=0,
        description="Of those, replicas whose start was seen. The others were running before "
        "they were traced: their start-up syscalls are missing (see ProfileComplete).",
    )
    localhost_profile: str | None = Field(
        default=None,
        max_length=326,
        pattern=r"^podtrace/[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.json$",
        description="With install: what a pod's seccompProfile.localhostProfile says to "
        "use this profile as the nodes have it (see installed).",
    )
    syscalls: list[SyscallCoverage] = Field(
        default_factory=list,
        max_length=MAX_PROFILE_SYSCALLS,
        description="The syscalls the profile allows, by name, each with how many of the "
        "traced replicas made it (fewer than replicas: only some did).",
        json_schema_extra=ATOMIC,
    )


class NodeInstallProblem(Model):
    """A node that does not have the current profiles, and why."""

    node: Name = Field(description="The node.")
    message: ShortText = Field(description="Why: not written yet, or its agent's error.")


class ProfileInstall(Model):
    """Where the profiles are installed (spec.seccompProfile.install)."""

    nodes: list[Name] = Field(
        default_factory=list,
        max_length=MAX_INSTALLED_NODES,
        description=f"Nodes whose kubelet seccomp directory holds the current profiles: the "
        f"first {MAX_INSTALLED_NODES} by name.",
        json_schema_extra=ATOMIC,
    )
    installed_nodes: Counter = Field(
        default=0, description="Nodes that hold the current profiles."
    )
    total_nodes: Counter = Field(
        default=0, description="Nodes podtrace runs on (one NodeTracer each)."
    )
    missing: list[NodeInstallProblem] = Field(
        default_factory=list,
        max_length=MAX_INSTALL_PROBLEMS,
        description=f"Nodes that do not hold them, with why: the first "
        f"{MAX_INSTALL_PROBLEMS} by name.",
        json_schema_extra=ATOMIC,
    )


class SeccompProfileResult(Model):
    """The generated seccomp profiles: one per container name of the selected pods, built
    from the syscalls their workloads made after the runtime set them up."""

    config_map: Name | None = Field(
        default=None, description="ConfigMap holding the profiles, one key per container."
    )
    syscalls: Counter = Field(
        default=0, description="Distinct syscalls the profiles allow, all containers together."
    )
    containers: list[ContainerProfile] = Field(
        default_factory=list,
        max_length=MAX_PROFILE_CONTAINERS,
        description="One profile per container name, by name.",
        json_schema_extra=ATOMIC,
    )
    containers_omitted: Counter = Field(
        default=0,
        description="Container names left out of containers (their profiles are still in "
        "the ConfigMap).",
    )
    installed: ProfileInstall | None = Field(
        default=None, description="With install: which nodes hold the profiles (condition "
        "ProfileInstalled says whether all do)."
    )


class ContainerTraceStatus(Model):
    """Observed state of a ContainerTrace, merged by the operator from the agents."""

    observed_generation: Counter | None = Field(
        default=None, description="The .metadata.generation this status reflects."
    )
    conditions: Conditions
    phase: TracePhase = Field(default=TracePhase.PENDING, description="Lifecycle phase.")
    message: Message = Field(default="", description="Why the trace is in this phase.")
    start_time: datetime | None = Field(default=None, description="When tracing started.")
    completion_time: datetime | None = Field(
        default=None, description="When tracing completed or failed."
    )
    target_count: Counter = Field(default=0, description="Containers selected.")
    targets: list[TracedTarget] = Field(
        default_factory=list,
        max_length=256,
        description="The traced containers, by node, pod UID and container.",
        json_schema_extra=ATOMIC,
    )
    syscalls: SyscallHistogram | None = Field(default=None, description="Syscall histogram.")
    execs_total: Counter = Field(default=0, description="Execs observed.")
    execs: list[ExecRecord] = Field(
        default_factory=list,
        max_length=64,
        description="Executed programs, most frequent first.",
    )
    execs_omitted: Counter = Field(
        default=0,
        description="Execs of programs left out of execs (execsTotal minus the counts "
        "listed): a node reports the programs a trace ran most, and this list holds 64.",
    )
    events_lost: Counter = Field(
        default=0,
        description="Events of the traced containers their nodes lost (ftrace: a buffer "
        "overran). When not 0, the counts are incomplete: see the Complete condition.",
    )
    seccomp_profile: SeccompProfileResult | None = Field(
        default=None, description="The generated seccomp profile, when requested."
    )


class ContainerTrace(Model):
    """Trace the pods of this namespace for a while: syscall histogram, executed
    programs, and optionally a seccomp profile built from what they did."""

    KIND: ClassVar[str] = "ContainerTrace"
    PLURAL: ClassVar[str] = "containertraces"
    SHORT_NAMES: ClassVar[list[str]] = ["ct"]
    NAMESPACED: ClassVar[bool] = True
    PRINTER_COLUMNS: ClassVar[list[dict[str, str]]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Targets", "type": "integer", "jsonPath": ".status.targetCount"},
        {"name": "Syscalls", "type": "integer", "jsonPath": ".status.syscalls.total"},
        {"name": "Execs", "type": "integer", "jsonPath": ".status.execsTotal"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    spec: ContainerTraceSpec = Field(description="The desired trace.")
    status: ContainerTraceStatus | None = Field(default=None, description="Observed state.")
