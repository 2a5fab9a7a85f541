"""Where the agent's cgroup2 mount sits in the host's hierarchy, for nodes that
live in containers (kind with --cgroupns=private, minikube's docker driver,
k3d, Docker Desktop).

There the mount is a cgroup namespace (or a bind mount of a sub-cgroup) rooted
at the node's cgroup: paths and levels read under it are relative to that root,
while cgroup IDs, BPF's ancestor helper and the tracepoints' `level` and `path`
are absolute. The backends need kubepods' absolute level (the ancestor check)
and absolute path (cgroup_mkdir paths in BPF and in ftrace filters).

How: the agent moves itself into the cgroup it already is in, and reads the
kernel's cgroup:cgroup_attach_task event for it from a short-lived ftrace
instance. The kernel emits that event for a migration to the same cgroup too,
with the destination's ID, absolute level and absolute path; the ID pins the
line to the directory written to, and that directory's path relative to the
mount is known, so the mount root's absolute path is the event's path minus it.

Why this and not the alternatives:
- /proc/<pid>/cgroup and mountinfo's root field are shown relative to the
  reader's own cgroup namespace: inside it they never name what lies above;
- cgroup IDs (the root directory's inode) are global but carry no names;
- walking ancestors with bpf_get_current_ancestor_cgroup_id finds the absolute
  level but no path, costs a second BCC compile, and cannot serve the ftrace
  backend, which exists for kernels where BCC does not work;
- matching only on kubepods' ID in BPF does not cover cgroup_mkdir (the new
  cgroup is not the current task's) nor ftrace filters, which match strings.
The no-op migration needs only tracefs (both backends need it anyway) and write
access to the agent's own cgroup.procs (root); it changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..backend import absolute, depth
from ..ftrace import parse
from ..ftrace.tracefs import Instance, TracefsError
from .report import Problem

ATTACH_EVENT = "cgroup/cgroup_attach_task"
CGROUP2_HIERARCHY = 0  # cgroup_attach_task's dst_root for the default hierarchy
MAX_WALK = 50_000  # directories looked at to find the agent's own cgroup


@dataclass(frozen=True)
class Nesting:
    """The cgroup2 mount's root in the host's hierarchy: "" (the hierarchy's
    root) or an absolute path such as "/system.slice/docker-<id>.scope"."""

    root_path: str

    @property
    def level(self) -> int:
        return depth(self.root_path)


def root_from_own(own_absolute: str, own_relative: str) -> str | None:
    """The mount root's absolute path, from the agent's own cgroup seen both ways;
    None when the absolute path does not end with the relative one.

    >>> root_from_own("/node/kubepods/pod1/agent", "kubepods/pod1/agent")
    '/node'
    >>> root_from_own("/node", "")
    '/node'
    >>> root_from_own("/a/b", "c") is None
    True
    """
    full, rel = absolute(own_absolute), absolute(own_relative)
    if not full.endswith(rel):  # rel is "" or starts with "/": whole components
        return None
    return full[: len(full) - len(rel)]


def own_cgroup(cgroup2: Path, pid: int, hint: str) -> str | None:
    """The agent's cgroup relative to the mount: `hint` (its /proc/self/cgroup
    path, relative to its cgroup namespace) when that directory lists `pid`,
    else found by walking the mount (the agent's namespace need not be the mount's)."""
    candidates: Iterator[str] = _walk(cgroup2)
    if hint and ".." not in hint.split("/"):
        candidates = _chain([hint.strip("/")], candidates)
    for rel in candidates:
        with contextlib.suppress(OSError):
            procs = (cgroup2 / rel / "cgroup.procs").read_text().split()
            if str(pid) in procs:
                return rel
    return None


def _chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


def _walk(cgroup2: Path) -> Iterator[str]:
    """Relative paths under the mount, breadth first, the root ("") first."""
    queue, seen = [""], 0
    while queue and seen < MAX_WALK:
        rel = queue.pop(0)
        seen += 1
        yield rel
        with contextlib.suppress(OSError), os.scandir(cgroup2 / rel) as entries:
            queue += sorted(
                f"{rel}/{e.name}" if rel else e.name
                for e in entries
                if e.is_dir(follow_symlinks=False)
            )


def resolve(cgroup2: str, tracefs: str, hint: str, pid: int | None = None) -> Nesting | Problem:
    """The mount's root in the host's hierarchy (see the module docstring); `hint`
    is the agent's cgroup as /proc/self/cgroup shows it."""
    if not tracefs:
        return _unresolved(cgroup2, "no tracefs to watch the kernel's cgroup events with")
    return _resolve(Path(cgroup2), Path(tracefs), hint, os.getpid() if pid is None else pid)


def _resolve(cgroup2: Path, tracefs: Path, hint: str, pid: int) -> Nesting | Problem:
    rel = own_cgroup(cgroup2, pid, hint)
    if rel is None:
        return _unresolved(cgroup2, f"the agent's own cgroup (pid {pid}) is not under {cgroup2}")
    own_id = (cgroup2 / rel).stat().st_ino
    try:
        seen = _attach_event(tracefs, cgroup2 / rel / "cgroup.procs", own_id, pid)
    except OSError as err:
        return _unresolved(cgroup2, f"tracing the agent's own cgroup_attach_task failed: {err}")
    if seen is None:
        return _unresolved(cgroup2, f"no cgroup_attach_task event for cgroup {own_id}")
    root = root_from_own(seen.path, rel)
    if root is None or depth(root) + depth(rel) != seen.level:
        return _unresolved(
            cgroup2, f"the kernel's path {seen.path} (level {seen.level}) does not end with {rel}"
        )
    return Nesting(root)


def _attach_event(tracefs: Path, procs: Path, cgroup_id: int, pid: int) -> parse.Cgroup | None:
    """Write `pid` to its own cgroup.procs and read the kernel's event for it."""
    instance = Instance(tracefs, f"podtrace-{os.getpid()}-nesting")
    instance.create()
    try:
        instance.enable(
            ATTACH_EVENT, f"dst_root == {CGROUP2_HIERARCHY} && dst_id == {cgroup_id}"
        )
        procs.write_text(str(pid))
        text = (instance.path / "trace").read_text()
    finally:
        with contextlib.suppress(OSError, TracefsError):
            instance.remove()
    for raw in text.splitlines():
        line = parse.parse_line(raw)
        found = parse.attach(line.body) if line and line.event == "cgroup_attach_task" else None
        if found is not None and found.id == cgroup_id:
            return found
    return None


def _unresolved(cgroup2: Path | str, why: str) -> Problem:
    return Problem(
        "CgroupNestingUnresolved",
        f"the cgroup2 mount at {cgroup2} is a cgroup namespace below the host's root, and "
        f"its place in the host's hierarchy could not be found ({why}). The agent must run "
        f"as root with tracefs mounted and its own cgroup under {cgroup2}; or mount the "
        f"host's (or the node's) /sys/fs/cgroup and pass --cgroupfs.",
        fatal=True,
    )
