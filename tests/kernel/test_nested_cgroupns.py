"""A node that lives in a container (kind with --cgroupns=private, minikube's
docker driver, k3d), emulated on this kernel: `podtrace-agent standalone` runs
in a private cgroup namespace rooted at a node-like cgroup, with its own
cgroup2 mount (--cgroupfs), kubepods below it. Everything the agent reads under
its mount is relative to the node; the kernel's levels, paths and IDs are not.

Per backend (bcc, ftrace) and layout (cgroupfs names; kind's systemd names with
cgroup root /kubelet, whose container paths pass 256 bytes): a container made
before the agent starts (the scan) and one after (cgroup_mkdir), each making
exactly GETPPIDS getppid calls and one exec; and what must not be counted: a
process in the node outside kubepods, one outside the node, and a container
of a second node with the very same relative layout.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kernel_support import cgroup2_mount, kill_and_remove
from test_standalone import EVENT_TIMEOUT_S, GETPPIDS, SETTLE_S, START_TIMEOUT_S, Agent, run_in

from harness.prereq import missing, need_binary, need_root

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Layout:
    kubepods: str
    container: str  # format: {uid}, {suid} (systemd-escaped), {cid}


CGROUPFS = Layout("kubepods", "kubepods/besteffort/pod{uid}/{cid}")
KIND = Layout(
    "kubelet.slice/kubelet-kubepods.slice",
    "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    "kubelet-kubepods-besteffort-pod{suid}.slice/cri-containerd-{cid}.scope",
)


def container_path(layout: Layout) -> tuple[str, str, str]:
    """(pod uid, container id, path below the node) of a new container."""
    uid, cid = str(uuid.uuid4()), uuid.uuid4().hex * 2
    return uid, cid, layout.container.format(uid=uid, suid=uid.replace("-", "_"), cid=cid)


@dataclass
class Cgroups:
    """Cgroups made by one test, removed deepest first (their processes killed)."""

    made: list[Path] = field(default_factory=list)

    def mkdirs(self, path: Path) -> Path:
        for parent in reversed([path, *path.parents]):
            if not parent.exists():
                parent.mkdir()
                self.made.append(parent)
        return path

    def remove(self) -> None:
        for path in sorted(self.made, key=lambda p: len(p.parts), reverse=True):
            kill_and_remove(path)  # retries EBUSY while a child goes offline
        assert not [p for p in self.made if p.exists()]


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    made = Cgroups()
    yield made
    made.remove()


@pytest.fixture(scope="module")
def cgroup2() -> Path:
    need_root("the kernel tier")
    need_binary("unshare", "apt-get install util-linux")
    mount = cgroup2_mount()
    if mount is None:
        missing("no cgroup2 mount")
    return mount  # type: ignore[return-value]


def node_name() -> str:
    """Like a kind node's cgroup on a Docker host (and as long)."""
    return f"podtrace-node-{uuid.uuid4().hex[:8]}.slice/docker-{uuid.uuid4().hex * 2}.scope"


def nested_agent(node: Path, mount: Path, backend: str) -> list[str]:
    """The agent in `node`, in a new cgroup namespace (rooted there) and mount
    namespace, with cgroup2 mounted at `mount` inside; the process is the agent
    itself (each step execs the next), so signals reach it."""
    agent = Path(sys.executable).with_name("podtrace-agent")
    if not agent.exists():
        missing("the podtrace-agent console script is not installed: run make venv")
    inner = (f"mount -t cgroup2 none {mount} && exec {agent} standalone --cgroupfs {mount} "
             f"--backend {backend} --duration 300s")
    outer = (f"echo $$ > {node}/cgroup.procs && "
             f"exec unshare --cgroup --mount --propagation private sh -c '{inner}'")
    return ["sh", "-c", outer]


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
@pytest.mark.parametrize("layout", [CGROUPFS, KIND], ids=["cgroupfs", "kind-systemd"])
def test_agent_in_a_nested_cgroup_namespace(
    backend: str, layout: Layout, cgroup2: Path, cgroups: Cgroups, helper: Path, tmp_path: Path
) -> None:
    node_rel = node_name()
    node = cgroups.mkdirs(cgroup2 / node_rel)
    kubepods = cgroups.mkdirs(node / layout.kubepods)
    # a second node with the very same layout: its cgroups are not ours
    other = cgroups.mkdirs(cgroup2 / node_name())
    uid_a, cid_a, rel_a = container_path(layout)
    uid_b, cid_b, rel_b = container_path(layout)
    _, cid_x, rel_x = container_path(layout)
    before = cgroups.mkdirs(node / rel_a)
    system = cgroups.mkdirs(node / "system.slice")  # the node's own services
    mount = tmp_path / "cgroup"
    mount.mkdir()
    outside = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"  # a name nobody else runs
    shutil.copy("/bin/true", outside)

    agent = Agent(nested_agent(node, mount, backend))
    try:
        env = agent.wait_for(lambda line: True, START_TIMEOUT_S)
        assert env["type"] == "environment", agent.stderr()
        cg = env["cgroup"]
        assert cg["root"] == str(mount) and cg["host_namespace"] is False
        assert cg["namespace_root"] == f"/{node_rel}"
        assert cg["kubepods_path"] == layout.kubepods
        assert cg["kubepods_id"] == kubepods.stat().st_ino
        assert cg["kubepods_level"] == len(Path(node_rel, layout.kubepods).parts)  # absolute
        assert env["problems"] == [], env["problems"]
        assert env["backend"]["name"] == backend

        scanned = agent.wait_for(lambda ln: ln.get("container_id") == cid_a, EVENT_TIMEOUT_S)
        after = cgroups.mkdirs(node / rel_b)
        created = agent.wait_for(lambda ln: ln.get("container_id") == cid_b, EVENT_TIMEOUT_S)
        elsewhere = cgroups.mkdirs(other / rel_x)

        settle = SETTLE_S[backend]
        for directory in (system, elsewhere, None):  # None: outside every node
            procs = directory / "cgroup.procs" if directory else None
            run_in(helper, procs, str(outside), tmp_path, settle)
        for directory in (before, after):
            run_in(helper, directory / "cgroup.procs", "/bin/true", tmp_path, settle)
        for cid in (cid_a, cid_b):
            agent.wait_for(lambda ln, c=cid: ln["type"] == "exec" and ln["container_id"] == c,
                           EVENT_TIMEOUT_S)
        agent.process.send_signal(signal.SIGINT)
        lines = agent.finish(timeout=120)
    finally:
        agent.close()
        subprocess.run(["umount", str(mount)], capture_output=True)  # only if it leaked out

    assert (scanned["type"], scanned["found"], scanned["pod_uid"]) == ("traced", "scan", uid_a)
    assert (created["type"], created["found"], created["pod_uid"]) == ("traced", "mkdir", uid_b)
    assert scanned["path"] == rel_a and created["path"] == rel_b  # relative to the mount
    assert scanned["cgroup_id"] == before.stat().st_ino
    assert created["cgroup_id"] == after.stat().st_ino

    execs = [ln for ln in lines if ln["type"] == "exec"]
    assert sorted((ln["container_id"], ln["filename"]) for ln in execs) == sorted(
        [(cid_a, "/bin/true"), (cid_b, "/bin/true")]
    ), execs
    summaries = {ln["container_id"]: ln for ln in lines if ln["type"] == "summary"}
    assert set(summaries) == {cid_a, cid_b}
    for cid in (cid_a, cid_b):
        assert summaries[cid]["syscalls"].get("getppid") == GETPPIDS, summaries[cid]
        assert summaries[cid]["execs"] == [{"filename": "/bin/true", "count": 1}]

    # nothing from outside kubepods, outside the node, or the other node
    assert {ln["container_id"] for ln in lines if ln["type"] == "traced"} == {cid_a, cid_b}
    assert cid_x not in json.dumps(lines)
    assert str(outside) not in json.dumps(lines)
    stats = lines[-1]
    assert stats["type"] == "stats" and stats["backend"] == backend
    assert stats["events_dropped"] == 0 and stats["problems"] == [], stats
    assert stats["unattributed_events"] == 0, stats
