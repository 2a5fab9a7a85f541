"""A local-cluster node in a cgroup namespace of its own, as a kind node is.

kind runs each node in a container with a private cgroup namespace: the node's
kubelet, containerd and pods see the node container's cgroup as their root, and
the cgroup filesystems mounted inside that namespace show only the node's subtree.
This module gives a node of the local cluster the same without a container:

1. a node cgroup, `<cgroup root>` (e.g. /podtrace-node-1), in every hierarchy;
2. a holder process that joins it, then `unshare --cgroup --mount` (the cgroup
   namespace is rooted at the node cgroup) and mounts the cgroup filesystems again
   inside (a tmpfs at /sys/fs/cgroup with each v1 hierarchy and cgroup2 on a hybrid or
   v1 host, cgroup2 alone on a v2 host), then sleeps;
3. `enter(argv)`: the argv that runs a program in that node (its containerd, its
   kubelet): join the node cgroup from the host's view, then `nsenter` the holder's
   cgroup and mount namespaces.

The node's kubelet then runs with cgroupRoot `/` (its view) while its pods are at
`<cgroup root>/kubepods/...` in the host's hierarchies, where the harness's host-side
cleanup looks for them. Mounts the kubelet and containerd make (pod volumes, container
root filesystems) stay in the node's mount namespace and go with it; the holder dies
with its parent (PR_SET_PDEATHSIG) as the node's daemons do.

Checked on the hybrid host of MACHINE facts (v1 controllers, cgroup2 at
/sys/fs/cgroup/unified, no systemd): containerd 1.6 + runc and the kubelet run pods
there; a container sees `/kubepods/besteffort/pod<uid>/<id>` in every hierarchy.
Written by hand because nothing packaged does this outside a container engine (kind,
which needs privileged containers this VM cannot run).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
_READY = b"node namespace ready\n"


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup filesystem as mounted on the host (from /proc/self/mountinfo)."""

    point: Path
    fstype: str  # cgroup or cgroup2
    options: str  # its superblock options, e.g. rw,cpu or rw,name=systemd


def host_cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup filesystems of a mountinfo text, in mount order.

    >>> line = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu"
    >>> host_cgroup_mounts(line)
    [CgroupMount(point=PosixPath('/sys/fs/cgroup/cpu'), fstype='cgroup', options='rw,cpu')]
    """
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split(" ")
        if len(fields) >= 3 and fields[0] in ("cgroup", "cgroup2"):
            found.append(CgroupMount(Path(left.split(" ")[4]), fields[0], fields[2]))
    return found


def _mount_options(mount: CgroupMount) -> str:
    """The -o of a v1 hierarchy's mount: its controllers (or none,name=X); rw and the
    like go, they are not what picks the hierarchy.

    >>> _mount_options(CgroupMount(Path("/x"), "cgroup", "rw,name=systemd"))
    'none,name=systemd'
    >>> _mount_options(CgroupMount(Path("/x"), "cgroup", "rw,cpu,cpuacct"))
    'cpu,cpuacct'
    """
    generic = {"rw", "ro", "nosuid", "nodev", "noexec", "relatime", "clone_children"}
    opts = [o for o in mount.options.split(",") if (o not in generic and "=" not in o) or
            o.startswith("name=")]  # fmt: skip
    if all(o.startswith("name=") for o in opts):
        opts = ["none", *opts]
    return ",".join(opts)


def mount_script(mounts: list[CgroupMount], top: Path = CGROUP_FS) -> str:
    """Shell commands that mount `mounts` again inside a new cgroup namespace, so each
    shows the namespace's root (the node cgroup)."""
    if any(m.point == top and m.fstype == "cgroup2" for m in mounts):  # a v2-only host
        return f"mount -t cgroup2 cgroup2 {shlex.quote(str(top))}"
    lines = [f"mount -t tmpfs -o mode=755 cgroup {shlex.quote(str(top))}"]
    for m in mounts:
        if m.point.parent != top:
            continue
        point = shlex.quote(str(m.point))
        opts = "" if m.fstype == "cgroup2" else f"-o {shlex.quote(_mount_options(m))} "
        lines.append(f"mkdir -p {point} && mount -t {m.fstype} {opts}cgroup {point}")
    return " && ".join(lines)


@dataclass
class NodeNamespace:
    """The cgroup and mount namespaces of one node (see the module docstring)."""

    cgroup_root: str  # the node cgroup, e.g. /podtrace-node-1 (the host's view)
    mounts: list[CgroupMount] = field(default_factory=list)
    _holder: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._holder.pid if self._holder is not None else None

    def _procs_files(self) -> list[str]:
        rel = self.cgroup_root.strip("/")
        return [str(m.point / rel / "cgroup.procs") for m in self.mounts]

    def _join(self) -> str:
        """Shell that moves itself into the node cgroup of every hierarchy."""
        return " && ".join(f"echo $$ > {shlex.quote(f)}" for f in self._procs_files())

    def start(self, make_cgroup: object = None) -> None:
        """Make the node cgroup (`make_cgroup(root)`, e.g. localcluster.make_cgroup_root)
        and start the holder; returns once the cgroup filesystems are mounted inside."""
        if not self.cgroup_root.strip("/"):
            raise ValueError("a node namespace needs a node cgroup below the root, not /")
        with open("/proc/self/mountinfo") as f:
            self.mounts = [m for m in host_cgroup_mounts(f.read())
                           if m.point == CGROUP_FS or m.point.parent == CGROUP_FS]  # fmt: skip
        if callable(make_cgroup):
            make_cgroup(self.cgroup_root)
        inner = f"{mount_script(self.mounts)} && printf {shlex.quote(_READY.decode())} && " \
                "exec sleep infinity"
        outer = f"{self._join()} && exec unshare --cgroup --mount --propagation private " \
                f"sh -c {shlex.quote(inner)}"
        self._holder = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", "sh", "-c", outer],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line != _READY:
            self._holder.kill()
            _, err = self._holder.communicate(timeout=10)
            self._holder = None
            raise RuntimeError(f"node namespace for {self.cgroup_root} did not come up: "
                               f"{(line + err).decode(errors='replace').strip()}")  # fmt: skip

    def enter(self, argv: list[str]) -> list[str]:
        """`argv` run in this node: in its cgroup (host view), then its namespaces."""
        assert self.pid is not None, "start() first"
        run = f"{self._join()} && exec nsenter --target {self.pid} --cgroup --mount -- \"$@\""
        return ["sh", "-c", run, "node-enter", *argv]

    def stop(self) -> None:
        """End the holder: with the node's daemons gone, its namespaces go too."""
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.kill()
            holder.communicate(timeout=10)
