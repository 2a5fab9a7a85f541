"""The one results interface both tracing backends implement (bcc and ftrace).

A backend sees the processes of cgroups under the kubepods cgroup only. User
space tells it which cgroups to trace and with which probes (`trace()`), and
reads back plain events (`poll()`) and cumulative per-cgroup syscall counts
(`syscall_counts()`). New cgroups under kubepods are noticed by the backend
itself (BPF: cgroup_mkdir tracepoint; ftrace: a watch on the cgroupfs) and
reported as `CgroupEvent`s; with `auto_trace_mask` set they are traced at once,
so a container is seen from its first syscall before user space knows it.

Masks are `podtrace_api.nodeconfig.Probe` bits (the BPF side mirrors them in
bpf/events.h). Cgroup ids are cgroup2 ids: the inode number of the cgroup2
directory, what bpf_get_current_cgroup_id() returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from podtrace_api.nodeconfig import Probe

NO_PROBES = Probe(0)


@dataclass(frozen=True)
class WorkloadMarker:
    """The syscall that ends a container runtime's set-up of a container: what the
    container's processes did before it is the runtime's (mounts, pivot_root,
    hostname, keyring), what they do after it (the seccomp filter's installation,
    and with no_new_privs off the user, groups and capabilities under that filter,
    then the exec of the workload) must stay allowed. runc (1.0 to 1.1 at least;
    standard_init_linux.go) calls prctl(PR_GET_PDEATHSIG) once, from its init
    process named `runc:[2:INIT]`, right after masking paths and before
    PR_SET_NO_NEW_PRIVS and the filter; `runc exec` (setns init) does not call it.
    The Security Profiles Operator's bpf recorder and oci-seccomp-bpf-hook start
    recording at the same call."""

    comm: str = "runc:[2:INIT]"
    syscall: str = "prctl"
    option: int = 2  # PR_GET_PDEATHSIG, the call's first argument


RUNC_MARKER = WorkloadMarker()


@runtime_checkable
class KubepodsRootLike(Protocol):
    """What a backend needs to know about the kubepods cgroup (discovery's result)."""

    @property
    def cgroup2(self) -> Path:
        """The cgroup2 mount, e.g. /sys/fs/cgroup/unified or /host/sys/fs/cgroup."""
        ...

    @property
    def path(self) -> str:
        """kubepods relative to the cgroup2 mount, e.g. "kubepods" or "kubepods.slice"."""
        ...

    @property
    def cgroup_id(self) -> int:
        """The kubepods cgroup's id (its cgroup2 inode number)."""
        ...

    @property
    def level(self) -> int:
        """The kubepods cgroup's absolute depth in the cgroup2 hierarchy (its root is 0)."""
        ...

    @property
    def root_path(self) -> str:
        """The cgroup2 mount's root as an absolute path in the hierarchy: "" when the
        mount shows the whole hierarchy, else e.g. "/system.slice/docker-<id>.scope"
        (a node in a container: its cgroup namespace). Tracepoints report absolute
        paths; the interface's paths are relative to the mount."""
        ...


@dataclass(frozen=True)
class KubepodsRoot:
    """A plain KubepodsRootLike value."""

    cgroup2: Path
    path: str
    cgroup_id: int
    level: int
    root_path: str = ""

    @classmethod
    def at(cls, cgroup2: Path | str, path: str, root_path: str = "") -> KubepodsRoot:
        """Read id and level from the filesystem: id is the directory's inode, the
        level counts root_path's components too."""
        cgroup2 = Path(cgroup2)
        rel = path.strip("/")
        root = absolute(root_path)
        return cls(
            cgroup2=cgroup2,
            path=rel,
            cgroup_id=(cgroup2 / rel).stat().st_ino,
            level=depth(root) + depth(rel),
            root_path=root,
        )

    @property
    def directory(self) -> Path:
        return self.cgroup2 / self.path


def absolute(path: str) -> str:
    """A cgroup path as the kernel's tracepoints write it, "" for the root.

    >>> absolute("a/b/"), absolute("/")
    ('/a/b', '')
    """
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts) if parts else ""


def depth(path: str) -> int:
    """Components of a cgroup path: its level below where it is relative to."""
    return len([p for p in path.split("/") if p])


def kubepods_absolute(kubepods: KubepodsRootLike) -> str:
    """The kubepods cgroup's path from the hierarchy's root, as tracepoints show it.

    >>> kubepods_absolute(KubepodsRoot(Path("/x"), "kubepods", 1, 2, "/node"))
    '/node/kubepods'
    """
    return absolute(f"{kubepods.root_path}/{kubepods.path}")


def mount_relative(kubepods: KubepodsRootLike, path: str) -> str | None:
    """An absolute cgroup path (from a tracepoint) relative to the cgroup2 mount,
    or None when it lies outside the mount (another node's cgroups).

    >>> nested = KubepodsRoot(Path("/x"), "kubepods", 1, 2, "/node")
    >>> mount_relative(nested, "/node/kubepods/a"), mount_relative(nested, "/node2/kubepods")
    ('kubepods/a', None)
    """
    root = absolute(kubepods.root_path)
    path = absolute(path)
    if not root:
        return path.lstrip("/")
    if not path.startswith(root + "/"):
        return None
    return path[len(root) + 1 :]


@dataclass(frozen=True)
class ExecEvent:
    """A successful execve in a traced cgroup (sched:sched_process_exec).

    `ppid` and `uid` are None when the backend cannot know them (ftrace: the
    process was gone before /proc could be read).
    """

    cgroup_id: int
    pid: int
    ppid: int | None
    uid: int | None
    comm: str
    filename: str
    timestamp_ns: int


@dataclass(frozen=True)
class ExitEvent:
    """A process (thread-group leader) of a traced cgroup exited (sched:sched_process_exit).

    `exit_code` is the status as wait(2) sees it (code << 8 | signal), or None
    when the backend cannot know it; `ppid`/`uid` likewise.
    """

    cgroup_id: int
    pid: int
    ppid: int | None
    uid: int | None
    comm: str
    exit_code: int | None
    timestamp_ns: int


@dataclass(frozen=True)
class OpenEvent:
    """An openat of a path under one of the cgroup's prefixes (the path as passed)."""

    cgroup_id: int
    pid: int
    comm: str
    path: str
    flags: int
    timestamp_ns: int


@dataclass(frozen=True)
class ConnectEvent:
    """A connect() to an AF_INET/AF_INET6 address (family as in socket.AF_*)."""

    cgroup_id: int
    pid: int
    comm: str
    family: int
    address: str
    port: int
    timestamp_ns: int


@dataclass(frozen=True)
class CgroupEvent:
    """A cgroup under kubepods was created or removed.

    `path` is relative to the cgroup2 mount (e.g. "kubepods/besteffort/pod…/…").
    `traced` says whether the backend started tracing it on its own
    (auto_trace_mask); an rmdir ends tracing of that cgroup in any case.
    """

    kind: Literal["mkdir", "rmdir"]
    cgroup_id: int
    level: int
    path: str
    timestamp_ns: int
    traced: bool = False


Event = ExecEvent | ExitEvent | OpenEvent | ConnectEvent | CgroupEvent


@dataclass(frozen=True)
class MapStat:
    """Fill level of one kernel-side table (mirrors nodetracer.MapUsage)."""

    name: str
    used: int
    capacity: int


@dataclass(frozen=True)
class BackendStats:
    """Events read from the kernel and events lost because a buffer was full.

    bcc: ring-buffer records (syscall counts live in maps and are never lost).
    ftrace: every trace line, syscall entries included, since they share the
    instance's ring buffer; lost = per-CPU overrun + dropped events.
    untraced_for_capacity: container cgroups created under kubepods that could
    not be auto-traced because the tables were full.
    lost: events lost per traced cgroup, cumulative since its trace(), so that
    the counts of that container can be marked incomplete. ftrace: its
    instance's overrun + dropped events (kept a while after the cgroup is gone);
    bcc: empty, its syscall counters lose nothing and a ring-buffer loss is no
    one cgroup's (events_dropped counts it).
    """

    events_seen: int
    events_dropped: int
    maps: list[MapStat] = field(default_factory=list)
    untraced_for_capacity: int = 0
    lost: dict[int, int] = field(default_factory=dict)


class BackendError(RuntimeError):
    """A backend cannot start or cannot do what was asked (with a human message)."""


class CapacityError(BackendError):
    """No room left to trace one more cgroup."""


@dataclass(frozen=True)
class SourceLimits:
    """What a backend can program for one cgroup; None: no limit (or not supported).

    The planner checks every source against these before tracing (a source over
    them is reported LimitExceeded), so `trace()` never sees such a request.
    """

    open_prefix_bytes: int | None = None
    open_prefixes: int | None = None  # distinct prefixes of one cgroup
    connect_ports: int | None = None  # distinct ports of one cgroup
    exec_filename_bytes: int | None = None


@dataclass(frozen=True)
class BackendOptions:
    """Options shared by both backends.

    auto_trace_mask: probes for container cgroups created under kubepods after
        start (see `kubepods.is_container_cgroup`); NO_PROBES only reports them.
    max_traced: how many cgroups can be traced at once (BPF: traced map entries
        and counter rows, each row 4 KiB).
    """

    auto_trace_mask: Probe = NO_PROBES
    max_traced: int = 512


def below_kubepods(kubepods: KubepodsRootLike, path: str) -> str | None:
    """`path` (relative to the cgroup2 mount) relative to kubepods, or None when
    it is not strictly below kubepods.

    >>> below_kubepods(KubepodsRoot(Path("/x"), "kubepods", 1, 1), "/kubepods/pod1/c")
    'pod1/c'
    >>> below_kubepods(KubepodsRoot(Path("/x"), "kubepods", 1, 1), "kubepods-other/c") is None
    True
    """
    rel, root = path.strip("/"), kubepods.path.strip("/")
    if not rel.startswith(root + "/"):
        return None
    return rel[len(root) + 1 :]


class Backend(Protocol):
    """The interface the agent codes against; bcc and ftrace implement it."""

    name: str
    limits: SourceLimits

    def start(self) -> None:
        """Load/attach (bcc) or prepare tracefs (ftrace); start noticing new cgroups."""
        ...

    def trace(
        self,
        cgroup_id: int,
        path: str,
        mask: Probe,
        open_prefixes: tuple[str, ...] = (),
        connect_ports: tuple[int, ...] = (),
    ) -> None:
        """Trace `cgroup_id` (at `path`, relative to the cgroup2 mount) with `mask`.

        Calling it again updates the mask (counts are kept). Raises BackendError
        for a path not below kubepods, CapacityError when the tables are full.
        Backends are not thread-safe: call them from one thread.
        """
        ...

    def untrace(self, cgroup_id: int) -> None:
        """Stop tracing `cgroup_id`; its counts are dropped. No-op when not traced."""
        ...

    def poll(self, timeout: float) -> list[Event]:
        """Events since the last poll; waits up to `timeout` seconds for the first one."""
        ...

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        """cgroup id → syscall nr → count, cumulative since that cgroup's trace()."""
        ...

    def markers(self) -> dict[int, dict[int, int]]:
        """cgroup id → its syscall counts (as `syscall_counts()` gives them) at the
        moment the container's runtime ended its set-up: runc init's
        prctl(PR_GET_PDEATHSIG) (`WORKLOAD_MARKER`). Only cgroups where it was seen;
        what a cgroup counted beyond these numbers is its workload's (seccomp
        profiles). Like syscall_counts(), a removed cgroup's is given once more."""
        ...

    def stats(self) -> BackendStats:
        """Events seen and dropped so far, and table usage."""
        ...

    def close(self) -> None:
        """Detach and free everything; idempotent."""
        ...
