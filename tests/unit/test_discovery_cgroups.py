# ruff: noqa: E501  (mountinfo samples are verbatim kernel lines)
"""cgroup layout, host namespace and kubepods discovery: mountinfo samples of
the layouts users run on, and real directory trees standing in for cgroupfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podtrace_agent.discovery.cgroups import (
    KubepodsCandidate,
    cgroup_layout,
    count_pods,
    find_kubepods,
    given_kubepods,
    host_namespace,
    is_kubepods_name,
    no_kubepods,
    pick_kubepods,
)
from podtrace_agent.discovery.nesting import own_cgroup, root_from_own
from podtrace_agent.discovery.procfs import parse_filesystems, parse_mountinfo
from podtrace_agent.discovery.tree import FsTree
from podtrace_api.nodetracer import CgroupDriver, CgroupVersion

ALL_FS = parse_filesystems("nodev\tcgroup\nnodev\tcgroup2\nnodev\ttracefs\n")
NO_CGROUP2 = parse_filesystems("nodev\tcgroup\n")

# CentOS 7 / RHEL 7 with systemd: cgroup v1 only
V1_ONLY = """\
18 60 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
29 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
"""
# Ubuntu 22.04, Debian 12 with systemd: unified
V2_ONLY = """\
23 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
# Ubuntu 20.04 (systemd hybrid), and this machine
HYBRID = """\
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate
26 24 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
29 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
"""
# the agent's pod on a v2 host: its own cgroupns mount, and the host's at /host/sys/fs/cgroup
POD_V2_HOST_MOUNTED = """\
1200 1190 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
1201 1190 0:25 / /host/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime master:9 - cgroup2 cgroup2 rw,nsdelegate
"""
# the agent's pod on a hybrid host, host cgroupfs mounted with HostToContainer propagation
POD_HYBRID_HOST_MOUNTED = """\
1300 1290 0:20 / /host/sys/fs/cgroup ro,nosuid,nodev,noexec master:7 - tmpfs tmpfs ro,mode=755
1301 1300 0:21 / /host/sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime master:8 - cgroup2 cgroup2 rw,nsdelegate
1302 1300 0:25 / /host/sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime master:12 - cgroup cgroup rw,memory
"""
# same, but a plain bind mount: the host's tmpfs without the cgroup mounts on it
POD_HYBRID_NO_PROPAGATION = """\
1300 1290 0:20 / /host/sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
"""
# a container with a private cgroup namespace (docker's default on v2)
CGROUPNS = """\
1400 1390 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
"""
# docker on a hybrid host, host cgroupns: the container's own sub-cgroups are bind-mounted
DOCKER_V1_BIND = """\
1500 1490 0:20 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
1501 1500 0:25 /docker/3350ade4226f /sys/fs/cgroup/memory ro,nosuid,nodev,noexec - cgroup cgroup rw,memory
1502 1500 0:21 /docker/3350ade4226f /sys/fs/cgroup/unified ro,nosuid,nodev,noexec - cgroup2 cgroup2 rw
"""
# cgroup2 mounted somewhere of its own next to a v1 /sys/fs/cgroup
V2_ELSEWHERE = V1_ONLY + "40 27 0:40 / /cgroup2 rw,relatime - cgroup2 none rw\n"
# an over-mount: what was at /sys/fs/cgroup is hidden by the later tmpfs
OVERMOUNTED = V2_ONLY + "50 26 0:50 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"

V1, V2, HY, UNK = CgroupVersion.V1, CgroupVersion.V2, CgroupVersion.HYBRID, CgroupVersion.UNKNOWN
HOST = "/host/sys/fs/cgroup"


@pytest.mark.parametrize(
    ("name", "mountinfo", "flag", "version", "cgroup2", "mount_root", "problem"),
    [
        ("v1-only", V1_ONLY, None, V1, None, "/", "CgroupV2NotMounted"),
        ("v2-only", V2_ONLY, None, V2, "/sys/fs/cgroup", "/", None),
        ("hybrid", HYBRID, None, HY, "/sys/fs/cgroup/unified", "/", None),
        ("hybrid, flag is the default", HYBRID, "/sys/fs/cgroup/", HY, "/sys/fs/cgroup/unified",
         "/", None),
        ("pod, v2 host at /host", POD_V2_HOST_MOUNTED, HOST, V2, HOST, "/", None),
        ("pod, hybrid host at /host", POD_HYBRID_HOST_MOUNTED, HOST, HY, f"{HOST}/unified",
         "/", None),
        ("pod, hybrid host without propagation", POD_HYBRID_NO_PROPAGATION, HOST, UNK, None, "/",
         "CgroupfsNotFound"),
        ("pod without --cgroupfs", POD_V2_HOST_MOUNTED, None, V2, "/sys/fs/cgroup", "/", None),
        ("flag at a path with no cgroupfs", V2_ONLY, "/nowhere", UNK, None, "/",
         "CgroupfsNotFound"),
        ("private cgroupns", CGROUPNS, None, V2, "/sys/fs/cgroup", "/", None),
        ("docker v1 bind of a sub-cgroup", DOCKER_V1_BIND, None, HY, "/sys/fs/cgroup/unified",
         "/docker/3350ade4226f", None),
        ("cgroup2 elsewhere", V2_ELSEWHERE, None, HY, "/cgroup2", "/", None),
        ("cgroup2 elsewhere ignored with a flag", V2_ELSEWHERE, "/sys/fs/cgroup", V1, None, "/",
         "CgroupV2NotMounted"),
        ("over-mounted", OVERMOUNTED, None, UNK, None, "/", "CgroupfsNotFound"),
        ("nothing mounted", "", None, UNK, None, "/", "CgroupfsNotFound"),
    ],
)
def test_cgroup_layout(
    name: str,
    mountinfo: str,
    flag: str | None,
    version: CgroupVersion,
    cgroup2: str | None,
    mount_root: str,
    problem: str | None,
) -> None:
    layout = cgroup_layout(parse_mountinfo(mountinfo), ALL_FS, flag)
    assert (layout.version, layout.cgroup2, layout.mount_root) == (version, cgroup2, mount_root)
    assert [p.reason for p in layout.problems] == ([problem] if problem else [])
    assert all(p.fatal for p in layout.problems)


def test_v1_only_message_says_what_to_mount() -> None:
    (problem,) = cgroup_layout(parse_mountinfo(V1_ONLY), ALL_FS).problems
    assert "mount -t cgroup2 none /sys/fs/cgroup/unified" in problem.message


def test_flag_without_cgroupfs_says_to_mount_the_hosts() -> None:
    layout = cgroup_layout(parse_mountinfo(POD_HYBRID_NO_PROPAGATION), ALL_FS, HOST)
    (problem,) = layout.problems
    assert f"--cgroupfs {HOST}" in problem.message
    assert "HostToContainer" in problem.message


def test_kernel_without_cgroup2() -> None:
    (problem,) = cgroup_layout(parse_mountinfo(V1_ONLY), NO_CGROUP2).problems
    assert problem.reason == "CgroupV2Unsupported"


def test_host_namespace_is_the_hierarchy_root_only() -> None:
    assert host_namespace(1) is True
    assert host_namespace(4242) is False  # a cgroup namespace or a sub-cgroup's bind mount


@pytest.mark.parametrize(
    ("is_host", "mount_root", "says"),
    [
        (True, "/", None),
        (False, "/", "a cgroup namespace below the host's root"),
        (False, "/docker/3350ade4226f", "a bind mount of /docker/3350ade4226f"),
    ],
)
def test_no_kubepods_outside_the_host_says_what_to_mount(
    is_host: bool, mount_root: str, says: str | None
) -> None:
    """The one nested case that cannot work: the pods are outside the mount."""
    problem = no_kubepods("/sys/fs/cgroup", is_host, mount_root)
    assert problem.reason == "KubepodsNotFound" and problem.fatal
    if says is None:
        assert "--cgroupfs" not in problem.message
    else:
        assert says in problem.message
        assert "/host/sys/fs/cgroup" in problem.message and "--cgroupfs" in problem.message


@pytest.mark.parametrize(
    ("name", "expected"),
    [("kubepods", True), ("kubepods.slice", True), ("kubelet-kubepods.slice", True),
     ("kubepods-besteffort.slice", False), ("kubepods2", False), ("system.slice", False),
     ("besteffort", False)],
)
def test_is_kubepods_name(name: str, expected: bool) -> None:
    assert is_kubepods_name(name) is expected


# --- kubepods over real directory trees -------------------------------------------

U1 = "11111111-2222-4333-8444-555555555555"
U2 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
CID = "c" * 64


def make(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).mkdir(parents=True, exist_ok=True)


def test_find_cgroupfs_kubepods(tmp_path: Path) -> None:
    make(tmp_path, f"kubepods/besteffort/pod{U1}/{CID}", f"kubepods/pod{U2}",
         "kubepods/burstable", "system.slice/containerd.service")
    (found,) = find_kubepods(FsTree(tmp_path))
    assert found == KubepodsCandidate("kubepods", os.stat(tmp_path / "kubepods").st_ino, 2)
    assert (found.level, found.driver) == (1, CgroupDriver.CGROUPFS)


def test_find_systemd_kubepods_of_a_kind_node(tmp_path: Path) -> None:
    u1 = U1.replace("-", "_")
    make(tmp_path, "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
         f"kubelet-kubepods-besteffort-pod{u1}.slice/cri-containerd-{CID}.scope",
         "system.slice/containerd.service")
    (found,) = find_kubepods(FsTree(tmp_path))
    assert found.path == "kubelet.slice/kubelet-kubepods.slice"
    assert (found.level, found.driver, found.pods) == (2, CgroupDriver.SYSTEMD, 1)


def test_find_kubepods_looks_three_levels_deep_only(tmp_path: Path) -> None:
    make(tmp_path, "a/b/kubepods", "a/b/c/kubepods", "x/kubepods/kubepods")
    assert sorted(c.path for c in find_kubepods(FsTree(tmp_path))) == ["a/b/kubepods",
                                                                      "x/kubepods"]


def test_find_kubepods_on_a_node_without_kubelet(tmp_path: Path) -> None:
    make(tmp_path, "system.slice/sshd.service", "user.slice")
    assert find_kubepods(FsTree(tmp_path)) == []
    assert find_kubepods(FsTree(tmp_path / "gone")) == []


def test_both_drivers_present_the_one_with_pods_wins(tmp_path: Path) -> None:
    make(tmp_path, "kubepods.slice/kubepods-besteffort.slice",
         f"kubepods/besteffort/pod{U1}/{CID}", f"kubepods/burstable/pod{U2}")
    chosen, others, problem = pick_kubepods(find_kubepods(FsTree(tmp_path)))
    assert chosen is not None and chosen.path == "kubepods"
    assert [o.path for o in others] == ["kubepods.slice"]
    assert problem is not None and problem.reason == "KubepodsAmbiguous" and not problem.fatal
    assert "kubepods (2 pods), kubepods.slice (0 pods)" in problem.message


def test_count_pods_ignores_what_is_not_a_pod(tmp_path: Path) -> None:
    make(tmp_path, f"kubepods/besteffort/pod{U1}", "kubepods/besteffort/notapod",
         f"kubepods/pod{U2}/{CID}", "kubepods/burstable")
    assert count_pods(FsTree(tmp_path), "kubepods") == 2


@pytest.mark.parametrize(
    ("candidates", "chosen"),
    [
        ([], None),
        ([KubepodsCandidate("kubepods", 5, 0)], "kubepods"),
        # equal pods: the shallower, then systemd
        ([KubepodsCandidate("kubepods", 5, 0), KubepodsCandidate("kubepods.slice", 6, 0)],
         "kubepods.slice"),
        ([KubepodsCandidate("kubelet.slice/kubelet-kubepods.slice", 5, 1),
          KubepodsCandidate("kubepods.slice", 6, 1)], "kubepods.slice"),
        ([KubepodsCandidate("kubepods", 5, 3), KubepodsCandidate("kubepods.slice", 6, 1)],
         "kubepods"),
    ],
)
def test_pick_kubepods(candidates: list[KubepodsCandidate], chosen: str | None) -> None:
    picked, others, problem = pick_kubepods(candidates)
    assert (picked.path if picked else None) == chosen
    assert len(others) == max(len(candidates) - 1, 0)
    assert (problem is not None) == (len(candidates) > 1)


def test_given_kubepods_overrides_the_choice(tmp_path: Path) -> None:
    make(tmp_path, f"kubepods/besteffort/pod{U1}/{CID}", "kubepods.slice/kubepods-besteffort.slice")
    tree = FsTree(tmp_path)
    chosen, others, problem = given_kubepods(tree, "/kubepods.slice", find_kubepods(tree), "/cg")
    assert problem is None and chosen is not None
    assert (chosen.path, chosen.pods, chosen.driver) == ("kubepods.slice", 0, CgroupDriver.SYSTEMD)
    assert [o.path for o in others] == ["kubepods"]


@pytest.mark.parametrize("path", ["missing", "", "/"])
def test_given_kubepods_that_does_not_exist(tmp_path: Path, path: str) -> None:
    chosen, _, problem = given_kubepods(FsTree(tmp_path), path, [], "/cg")
    assert chosen is None
    assert problem is not None and problem.fatal and f"--kubepods {path}:" in problem.message


@pytest.mark.parametrize(
    ("absolute", "relative", "root"),
    [
        ("/system.slice/docker-1.scope/kubelet.slice/x", "kubelet.slice/x", "/system.slice/docker-1.scope"),
        ("/node", "", "/node"),
        ("/a/b", "a/b", ""),  # the host's root after all
        ("/a/xb", "b", None),  # never half a component
        ("/a/b", "c", None),
    ],
)
def test_root_from_own(absolute: str, relative: str, root: str | None) -> None:
    assert root_from_own(absolute, relative) == root


def test_own_cgroup_by_hint_or_walk(tmp_path: Path) -> None:
    (tmp_path / "kubelet.slice/agent").mkdir(parents=True)
    (tmp_path / "kubelet.slice/agent/cgroup.procs").write_text("7\n42\n")
    assert own_cgroup(tmp_path, 42, "/kubelet.slice/agent") == "kubelet.slice/agent"
    # the hint is relative to another namespace: found by walking
    assert own_cgroup(tmp_path, 42, "/../other") == "kubelet.slice/agent"
    assert own_cgroup(tmp_path, 43, "/") is None


def test_an_agent_in_a_pod_traces_its_own_nodes_kubepods() -> None:
    # Several nodes' kubelets on one host, each under its own cgroup root: the agent's
    # own cgroup decides, even against a node with more pods, and it is no problem.
    mine = KubepodsCandidate("node-1/kubepods", 11, 1)
    other = KubepodsCandidate("node-2/kubepods", 22, 7)
    chosen, others, problem = pick_kubepods(
        [other, mine], "/node-1/kubepods/besteffort/pod1234/abcd"
    )
    assert chosen == mine and others == [other] and problem is None
    # Outside every kubepods (a host process), the most pods win, reported as ambiguous.
    chosen, others, problem = pick_kubepods([other, mine], "/user.slice")
    assert chosen == other and problem is not None and problem.reason == "KubepodsAmbiguous"
    # A sibling whose name starts the same is not an ancestor.
    chosen, _, _ = pick_kubepods([mine, other], "/node-1/kubepods-x/pod1")
    assert chosen == other
