"""Pure parsers for the /proc files discovery reads: /proc/filesystems,
/proc/self/mountinfo and /proc/self/cgroup. Text in, plain data out, so every
layout a user may run on is a test case rather than a machine."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Mount:
    """One line of /proc/<pid>/mountinfo (proc(5)).

    root is the directory of the filesystem that is mounted (for cgroup2 in a
    cgroup namespace, or a bind mount of a sub-cgroup, it is not "/").
    """

    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    fstype: str
    source: str
    options: tuple[str, ...]
    super_options: tuple[str, ...]


@dataclass(frozen=True)
class ProcCgroup:
    """One line of /proc/<pid>/cgroup: "hierarchy-ID:controllers:path".

    The cgroup2 line is "0::<path>" with no controllers.
    """

    hierarchy_id: int
    controllers: tuple[str, ...]
    path: str


_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    r"""Undo the kernel's octal escaping of space, tab, newline and backslash.

    >>> unescape(r"/mnt/with\040space")
    '/mnt/with space'
    """
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_filesystems(text: str) -> frozenset[str]:
    """Filesystem types the kernel supports.

    >>> sorted(parse_filesystems("nodev\\tcgroup\\nnodev\\tcgroup2\\n\\text4\\n"))
    ['cgroup', 'cgroup2', 'ext4']
    """
    names = set()
    for line in text.splitlines():
        fields = line.split()
        if fields:
            names.add(fields[-1])
    return frozenset(names)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts in the order the kernel lists them (an over-mount comes after what it hides).

    Malformed lines are skipped: a parser at the edge of the agent must not be
    the reason it does not start.
    """
    mounts = []
    for line in text.split("\n"):  # not splitlines(): \x1c-\x1e, \x85, \u2028 are path bytes
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)  # optional fields end at a lone "-"
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    root=unescape(fields[3]),
                    mount_point=unescape(fields[4]),
                    options=tuple(fields[5].split(",")),
                    fstype=fields[sep + 1],
                    source=unescape(fields[sep + 2]),
                    super_options=tuple(fields[sep + 3].split(",")),
                )
            )
        except (ValueError, IndexError):
            continue
    return mounts


def parse_proc_cgroup(text: str) -> list[ProcCgroup]:
    """The cgroups of a process, one per hierarchy.

    >>> parse_proc_cgroup("4:memory:/user\\n0::/kubepods/x\\n")[1].path
    '/kubepods/x'
    """
    entries = []
    for line in text.split("\n"):  # a path may hold any character but "/" and NUL
        hierarchy, sep1, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep1 and sep2 and hierarchy.isascii() and hierarchy.isdigit()):  # not '¹'
            continue
        entries.append(
            ProcCgroup(int(hierarchy), tuple(c for c in controllers.split(",") if c), path)
        )
    return entries


def cgroup2_path(entries: list[ProcCgroup]) -> str | None:
    """The process's cgroup2 path ("0::" line), relative to its cgroup namespace."""
    for entry in entries:
        if entry.hierarchy_id == 0 and not entry.controllers:
            return entry.path
    return None
