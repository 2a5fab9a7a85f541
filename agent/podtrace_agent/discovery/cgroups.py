"""Pure decisions about the node's cgroups: the layout (v1, v2, hybrid) and the
cgroup2 mount to use, whether that mount is the host's hierarchy, and which
kubepods cgroup holds the pods.

The agent needs the cgroup2 hierarchy in every layout: BPF's cgroup helpers and
the cgroup_mkdir tracepoint's ids are cgroup2 ids, and runc joins cgroup2 on
hybrid hosts too, so containers have a cgroup2 directory there as well.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from podtrace_api.nodetracer import CgroupDriver, CgroupVersion

from ..identity import parse as parse_identity
from .procfs import Mount
from .report import Problem
from .tree import CgroupTree

DEFAULT_CGROUPFS = "/sys/fs/cgroup"
HOST_CGROUPFS = "/host/sys/fs/cgroup"
# The root directory of a cgroup2 hierarchy is inode 1; the root of a cgroup
# namespace, or a bind mount of a sub-cgroup, is any other cgroup's inode.
ROOT_INODE = 1

_MOUNT_HOST = (
    f"Mount the host's /sys/fs/cgroup at {HOST_CGROUPFS} (DaemonSet: a hostPath volume "
    f"with mountPropagation HostToContainer, so a hybrid host's unified/ comes along) "
    f"and pass --cgroupfs {HOST_CGROUPFS}"
)


@dataclass(frozen=True)
class Layout:
    version: CgroupVersion
    cgroup2: str | None  # the cgroup2 mount point to use
    mount_root: str = "/"  # the cgroup2 mount's root within its hierarchy
    problems: tuple[Problem, ...] = ()


def _norm(path: str) -> str:
    return posixpath.normpath("/" + path.strip("/")) if path.strip("/") else "/"


def cgroup_layout(
    mounts: list[Mount], filesystems: frozenset[str], cgroupfs: str | None = None
) -> Layout:
    """The layout under `cgroupfs` (default /sys/fs/cgroup) and its cgroup2 mount.

    cgroup2 at the root: v2. cgroup (v1) controllers below the root and cgroup2 at
    <root>/unified: hybrid. Controllers only: v1, which podtrace cannot trace.
    Without --cgroupfs a cgroup2 mount elsewhere is used when the root has none.
    """
    root = _norm(cgroupfs or DEFAULT_CGROUPFS)
    visible = {m.mount_point: m for m in mounts}  # the last mount on a point is the visible one
    at_root = visible.get(root)
    if at_root is not None and at_root.fstype == "cgroup2":
        return Layout(CgroupVersion.V2, root, at_root.root)

    v1 = any(
        m.fstype == "cgroup" and posixpath.dirname(m.mount_point) == root
        for m in visible.values()
    )
    unified = visible.get(posixpath.join(root, "unified"))
    if unified is not None and unified.fstype == "cgroup2":
        version = CgroupVersion.HYBRID if v1 else CgroupVersion.V2
        return Layout(version, unified.mount_point, unified.root)

    if cgroupfs is None:
        elsewhere = sorted(
            (m for m in visible.values() if m.fstype == "cgroup2"),
            key=lambda m: (len(m.mount_point), m.mount_point),
        )
        if elsewhere:
            version = CgroupVersion.HYBRID if v1 else CgroupVersion.V2
            return Layout(version, elsewhere[0].mount_point, elsewhere[0].root)

    return Layout(
        CgroupVersion.V1 if v1 else CgroupVersion.UNKNOWN,
        None,
        problems=(_no_cgroup2(root, v1, filesystems, cgroupfs is not None),),
    )


def _no_cgroup2(root: str, v1: bool, filesystems: frozenset[str], flag: bool) -> Problem:
    if "cgroup2" not in filesystems:
        return Problem(
            "CgroupV2Unsupported",
            "the kernel has no cgroup2 filesystem (not in /proc/filesystems); podtrace needs "
            "cgroup2 (Linux 4.5+, CONFIG_CGROUPS) to tell containers apart.",
            fatal=True,
        )
    if v1:
        fix = (
            f"cgroup v1 only under {root}: podtrace needs the cgroup2 hierarchy. "
            f"Mount it: mount -t cgroup2 none {root}/unified (runc then joins it), or boot "
            f"with systemd.unified_cgroup_hierarchy=1."
        )
        if flag:
            fix += (
                f" If the host has {root}/unified, the volume lacks its sub-mounts: use "
                f"mountPropagation HostToContainer (or an rbind mount)."
            )
        return Problem("CgroupV2NotMounted", fix, fatal=True)
    where = f"--cgroupfs {root}" if flag else root
    return Problem(
        "CgroupfsNotFound",
        f"no cgroup filesystem at {where} (neither cgroup2 there nor at {root}/unified). "
        + (_MOUNT_HOST if flag else f"Mount it: mount -t cgroup2 none {root}") + ".",
        fatal=True,
    )


def host_namespace(root_inode: int) -> bool:
    """Whether the cgroup2 mount shows the host's whole hierarchy: its root
    directory is inode 1 only then. Otherwise it is a cgroup namespace (a node in
    a container) or a bind mount of a sub-cgroup: IDs are still the host's, paths
    and levels are relative to the mount (nesting.py places it)."""
    return root_inode == ROOT_INODE


# kubepods cgroup names: cgroupfs "kubepods", systemd "kubepods.slice", and with
# kubelet's --cgroup-root on systemd "<root>-kubepods.slice" (kind: kubelet-kubepods.slice).
_KUBEPODS = re.compile(r"kubepods|kubepods\.slice|[A-Za-z0-9_.:-]+-kubepods\.slice")


def is_kubepods_name(name: str) -> bool:
    return _KUBEPODS.fullmatch(name) is not None


@dataclass(frozen=True)
class KubepodsCandidate:
    path: str  # relative to the cgroup2 mount, no leading "/"
    cgroup_id: int
    pods: int  # pod cgroups found under it

    @property
    def level(self) -> int:
        return len(self.path.split("/"))

    @property
    def driver(self) -> CgroupDriver:
        return CgroupDriver.SYSTEMD if self.path.endswith(".slice") else CgroupDriver.CGROUPFS


def find_kubepods(tree: CgroupTree, max_depth: int = 3) -> list[KubepodsCandidate]:
    """Every kubepods cgroup within `max_depth` levels of the root, with its pod count.

    Breadth-first, never below a kubepods cgroup; directories that vanish while
    walking are skipped (the tree's job).
    """
    found = []
    level = [""]
    for _ in range(max_depth):
        below = []
        for parent in level:
            for name in tree.children(parent):
                path = f"{parent}/{name}" if parent else name
                if not is_kubepods_name(name):
                    below.append(path)
                    continue
                cgroup_id = tree.cgroup_id(path)
                if cgroup_id is not None:
                    found.append(KubepodsCandidate(path, cgroup_id, count_pods(tree, path)))
        level = below
    return found


def count_pods(tree: CgroupTree, kubepods: str) -> int:
    """Pod cgroups directly under kubepods (guaranteed) or under a QoS level."""
    pods = 0
    for name in tree.children(kubepods):
        child = f"{kubepods}/{name}"
        if _is_pod(child):
            pods += 1
        else:
            pods += sum(_is_pod(f"{child}/{n}") for n in tree.children(child))
    return pods


def _is_pod(path: str) -> bool:
    found = parse_identity(path)
    return found is not None and found.container_id is None


def pick_kubepods(
    candidates: list[KubepodsCandidate], own_cgroup: str = ""
) -> tuple[KubepodsCandidate | None, list[KubepodsCandidate], Problem | None]:
    """The kubepods cgroup to trace, the others, and a problem to report.

    An agent that runs in a pod (the DaemonSet) lives under its own node's kubepods:
    that one is the node's, whatever else is there (e.g. several nodes' kubelets on one
    host, each under its own cgroup root). Otherwise a node where kubelet switched
    drivers (or a test) can have both kubepods and kubepods.slice: the one with the
    most pods wins (ties: the shallower, then the systemd one, which kubelet's default
    driver creates); the others are reported, since pods there are not traced.

    >>> a, b = KubepodsCandidate("n1/kubepods", 1, 1), KubepodsCandidate("n2/kubepods", 2, 5)
    >>> pick_kubepods([a, b], "/n1/kubepods/besteffort/pod1/c1")[0].path
    'n1/kubepods'
    >>> pick_kubepods([a, b])[0].path
    'n2/kubepods'
    """
    if not candidates:
        return None, [], None
    own = own_cgroup.strip("/")
    mine = [c for c in candidates if own.startswith(c.path + "/")]
    if mine:
        return mine[0], [c for c in candidates if c is not mine[0]], None
    ranked = sorted(
        candidates,
        key=lambda c: (-c.pods, c.level, c.driver is not CgroupDriver.SYSTEMD, c.path),
    )
    chosen, others = ranked[0], ranked[1:]
    if not others:
        return chosen, [], None
    listed = ", ".join(f"{c.path} ({c.pods} pods)" for c in ranked)
    return chosen, others, Problem(
        "KubepodsAmbiguous",
        f"several kubepods cgroups: {listed}; tracing pods under {chosen.path} only. "
        f"Remove the stale one, or check kubelet's --cgroup-driver and --cgroup-root.",
    )


def given_kubepods(
    tree: CgroupTree, path: str, found: list[KubepodsCandidate], cgroup2: str
) -> tuple[KubepodsCandidate | None, list[KubepodsCandidate], Problem | None]:
    """The kubepods cgroup named by --kubepods, and the others found (reported only)."""
    rel = path.strip("/")
    others = [c for c in found if c.path != rel]
    cgroup_id = tree.cgroup_id(rel) if rel else None
    if cgroup_id is None:
        return None, others, Problem(
            "KubepodsNotFound",
            f"--kubepods {path}: no such cgroup under {cgroup2}; give the kubepods cgroup's "
            f"path relative to the cgroup2 mount (e.g. kubepods or kubepods.slice).",
            fatal=True,
        )
    return KubepodsCandidate(rel, cgroup_id, count_pods(tree, rel)), others, None


def no_kubepods(cgroup2: str, is_host: bool = True, mount_root: str = "/") -> Problem:
    """No kubepods under the mount. Below the host's root this is the case that
    cannot work: the mount is the agent's own container's namespace, not the node's."""
    message = (
        f"no kubepods cgroup under {cgroup2} (looked for kubepods, kubepods.slice and "
        f"*-kubepods.slice up to 3 levels deep): is kubelet running on this node with "
        f"--cgroups-per-qos (the default)? An unusual layout can be named with --kubepods."
    )
    if not is_host:
        seen = "a cgroup namespace" if mount_root == "/" else f"a bind mount of {mount_root}"
        message += (
            f" {cgroup2} is {seen} below the host's root, and the pods are outside it. "
            f"{_MOUNT_HOST}."
        )
    return Problem("KubepodsNotFound", message, fatal=True)
