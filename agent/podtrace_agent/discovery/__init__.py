"""Discovery: what this node looks like to a tracer (cgroup layout, kubepods,
tracefs, kernel, whether BCC can compile) and which backend to use, each result
with a message that says what to mount or change.

    procfs.py   pure parsers of /proc/filesystems, mountinfo, /proc/<pid>/cgroup
    cgroups.py  pure decisions: layout, host cgroup namespace, kubepods
    kernel.py   tracefs, BTF, BCC checks (pure) and their I/O
    choice.py   choose_backend(requested, bcc, tracefs)
    tree.py     read access to a cgroup2 hierarchy (CgroupTree)
    report.py   the report dataclasses, 1:1 with NodeTracer status
    discover.py discover(): the edge that reads the machine
"""

from __future__ import annotations

from .choice import choose_backend, fallback
from .discover import discover
from .report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
    Problem,
)
from .tree import CgroupTree, FsTree

__all__ = [
    "BackendReport",
    "BccCheck",
    "CgroupReport",
    "CgroupTree",
    "DiscoveryReport",
    "FsTree",
    "KernelReport",
    "Problem",
    "choose_backend",
    "discover",
    "fallback",
]
