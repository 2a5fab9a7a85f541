"""The discovery report: plain dataclasses that map 1:1 onto NodeTracer status
(KernelStatus, CgroupStatus, BackendStatus), plus the problems found, each with
a condition-style reason and a message that says what to mount or change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podtrace_api.base import MAX_MESSAGE
from podtrace_api.nodetracer import (
    BackendName,
    BackendStatus,
    CgroupDriver,
    CgroupStatus,
    CgroupVersion,
    KernelStatus,
)

from ..backend import KubepodsRoot


@dataclass(frozen=True)
class Problem:
    """Something that stops or limits tracing, and how to fix it.

    reason is CamelCase (a Kubernetes condition reason); fatal means tracing
    cannot start until it is fixed.
    """

    reason: str
    message: str
    fatal: bool = False


@dataclass(frozen=True)
class KernelReport:
    release: str
    btf: bool
    tracefs: str = ""  # "" when no usable tracefs was found

    def to_status(self) -> KernelStatus:
        return KernelStatus(release=self.release, btf=self.btf, tracefs=self.tracefs)


@dataclass(frozen=True)
class CgroupReport:
    version: CgroupVersion = CgroupVersion.UNKNOWN
    driver: CgroupDriver = CgroupDriver.UNKNOWN
    root: str = ""  # the cgroup2 mount used, e.g. /sys/fs/cgroup/unified
    host_namespace: bool = False
    # root's place in the host's hierarchy: "/" (the host's root), an absolute path
    # (a node in a container: its cgroup namespace), "" (unknown)
    namespace_root: str = ""
    kubepods_path: str = ""  # relative to root, no leading "/": "kubepods", "kubepods.slice"
    kubepods_id: int | None = None
    kubepods_level: int | None = None  # absolute in the hierarchy, as BPF sees it
    other_kubepods: tuple[str, ...] = ()  # further kubepods cgroups found, not used
    message: str = ""

    def to_status(self) -> CgroupStatus:
        return CgroupStatus(
            version=self.version,
            driver=self.driver,
            root=self.root,
            host_namespace=self.host_namespace,
            namespace_root=self.namespace_root,
            kubepods_path=self.kubepods_path,
            kubepods_id=self.kubepods_id,
            kubepods_level=self.kubepods_level,
            message=self.message,
        )

    def kubepods(self) -> KubepodsRoot | None:
        """What a tracing backend needs, or None when no kubepods cgroup was found."""
        if (not self.root or not self.namespace_root or self.kubepods_id is None
                or self.kubepods_level is None):
            return None
        return KubepodsRoot(
            cgroup2=Path(self.root),
            path=self.kubepods_path,
            cgroup_id=self.kubepods_id,
            level=self.kubepods_level,
            root_path=self.namespace_root.rstrip("/"),
        )


@dataclass(frozen=True)
class BccCheck:
    """Whether BCC can compile here, and why (not)."""

    available: bool
    reason: str


@dataclass(frozen=True)
class BackendReport:
    name: BackendName
    reason: str

    def to_status(self) -> BackendStatus:
        return BackendStatus(name=self.name, reason=truncate(self.reason))


@dataclass(frozen=True)
class DiscoveryReport:
    kernel: KernelReport
    cgroup: CgroupReport
    bcc: BccCheck
    backend: BackendReport
    agent_cgroup: str = ""  # the agent's own cgroup2 path (to leave itself untraced)
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data, snake_case like the rest of the agent's output."""
        return asdict(self)


def truncate(message: str) -> str:
    """A message that fits a status field."""
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def join_messages(problems: list[Problem]) -> str:
    return truncate(" ".join(p.message for p in problems))
