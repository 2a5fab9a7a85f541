"""The initial scan: container cgroups that already exist under kubepods when
the agent starts. The backends notice new cgroups from their creation on; this
covers the containers started before the agent (or before its restart)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .discovery.tree import CgroupTree
from .identity import CgroupIdentity, parse
from .kubepods import is_container_cgroup

# kubepods/<qos>/<pod>/<container>/<subgroup…>: containers sit 2 or 3 levels
# below kubepods; their own sub-cgroups (crun's "container", systemd inside a
# container) a few more. The bound keeps a pathological tree from stalling start-up.
MAX_DEPTH = 8


@dataclass(frozen=True)
class ContainerCgroup:
    """A container's cgroup (or a sub-cgroup of it), ready for Backend.trace()."""

    cgroup_id: int
    path: str  # relative to the cgroup2 mount, no leading "/", as the backends take it
    identity: CgroupIdentity


def container_cgroup(kubepods: str, cgroup_id: int, path: str) -> ContainerCgroup | None:
    """The container cgroup at `path` (relative to the mount), or None when it is
    not one by kubepods.is_container_cgroup, or its path names no container
    (conmon's scope, a stray directory): then there is nothing to report it as.

    >>> container_cgroup("kubepods", 5, "kubepods/besteffort/pod1") is None
    True
    """
    root = kubepods.strip("/")
    rel = path.strip("/")
    if not rel.startswith(root + "/"):
        return None
    if not is_container_cgroup(root, rel[len(root) + 1 :]):
        return None
    identity = parse(rel)
    if identity is None or identity.container_id is None:
        return None
    return ContainerCgroup(cgroup_id, rel, identity)


def scan(tree: CgroupTree, kubepods: str, max_depth: int = MAX_DEPTH) -> Iterator[ContainerCgroup]:
    """Every container cgroup under `kubepods` (a path relative to the tree's root).

    Depth first, in name order. Below the first level (QoS or guaranteed pod)
    only pod and container cgroups are entered, so conmon's and other helpers'
    cgroups are neither reported nor walked. Cgroups removed during the walk are
    skipped.
    """
    root = kubepods.strip("/")
    yield from _walk(tree, root, root, 0, max_depth)


def _walk(
    tree: CgroupTree, kubepods: str, parent: str, depth: int, max_depth: int
) -> Iterator[ContainerCgroup]:
    if depth >= max_depth:
        return
    for name in tree.children(parent):
        path = f"{parent}/{name}" if parent else name
        if depth > 0 and parse(path) is None:
            continue  # not a pod's: conmon, a stray directory
        cgroup_id = tree.cgroup_id(path)
        if cgroup_id is None:
            continue  # removed meanwhile
        found = container_cgroup(kubepods, cgroup_id, path)
        if found is not None:
            yield found
        yield from _walk(tree, kubepods, path, depth + 1, max_depth)
