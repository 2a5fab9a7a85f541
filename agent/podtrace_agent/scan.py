"""The initial scan: container cgroups that already exist under kubepods when
the agent starts. The backends notice new cgroups from their creation on; this
covers the containers started before the agent (or before its restart)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .discovery.tree import CgroupTree
from .identity import CgroupIdentity, parse

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


def scan(tree: CgroupTree, kubepods: str, max_depth: int = MAX_DEPTH) -> Iterator[ContainerCgroup]:
    """Every container cgroup under `kubepods` (a path relative to the tree's root).

    Depth first, in name order. Below the first level (QoS or guaranteed pod)
    only pod and container cgroups are entered, so conmon's and other helpers'
    cgroups are neither reported nor walked. Cgroups removed during the walk are
    skipped.
    """
    yield from _walk(tree, kubepods.strip("/"), 0, max_depth)


def _walk(tree: CgroupTree, parent: str, depth: int, max_depth: int) -> Iterator[ContainerCgroup]:
    if depth >= max_depth:
        return
    for name in tree.children(parent):
        path = f"{parent}/{name}" if parent else name
        identity = parse(path)
        if identity is None and depth > 0:
            continue  # not a pod's: conmon, a stray directory
        if identity is not None and identity.is_container:
            cgroup_id = tree.cgroup_id(path)
            if cgroup_id is None:
                continue  # removed meanwhile
            yield ContainerCgroup(cgroup_id, path, identity)
        yield from _walk(tree, path, depth + 1, max_depth)
