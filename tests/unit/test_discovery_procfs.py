"""Parsers of /proc/filesystems, /proc/self/mountinfo and /proc/self/cgroup."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from podtrace_agent.discovery.procfs import (
    Mount,
    ProcCgroup,
    cgroup2_path,
    parse_filesystems,
    parse_mountinfo,
    parse_proc_cgroup,
    unescape,
)

# this machine's, trimmed
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/proc", "/", "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified",
    ]
    assert mounts[4] == Mount(41, 31, "/", "/sys/fs/cgroup/unified", "cgroup2", "cgroup2",
                              ("rw", "relatime"), ("rw",))
    assert mounts[3].super_options == ("rw", "memory")


def test_parse_mountinfo_optional_fields_and_escapes() -> None:
    line = (r"36 35 98:0 /docker/ab\040c /mnt/with\040space rw,noatime master:1 shared:7 "
            r"- cgroup2 cgroup2 rw,nsdelegate")
    (mount,) = parse_mountinfo(line)
    assert mount.root == "/docker/ab c"
    assert mount.mount_point == "/mnt/with space"
    assert mount.fstype == "cgroup2"
    assert mount.super_options == ("rw", "nsdelegate")


def test_parse_mountinfo_skips_malformed_lines() -> None:
    text = "garbage\n1 2 0:1 / /x rw - \n" + MOUNTINFO.splitlines()[0]
    assert [m.mount_point for m in parse_mountinfo(text)] == ["/proc"]


@given(st.text(max_size=500))
def test_parse_mountinfo_never_raises(text: str) -> None:
    assert isinstance(parse_mountinfo(text), list)


def test_unescape() -> None:
    assert unescape(r"a\011b\012c\134d") == "a\tb\nc\\d"
    assert unescape("plain") == "plain"


def test_parse_filesystems() -> None:
    text = "nodev\tsysfs\nnodev\tcgroup\nnodev\tcgroup2\n\text4\n\n"
    assert parse_filesystems(text) == {"sysfs", "cgroup", "cgroup2", "ext4"}


def test_parse_proc_cgroup_hybrid() -> None:
    text = "9:name=systemd:/\n4:memory:/process_api/0975\n2:cpu,cpuacct:/\n0::/\n"
    entries = parse_proc_cgroup(text)
    assert entries[1] == ProcCgroup(4, ("memory",), "/process_api/0975")
    assert entries[2].controllers == ("cpu", "cpuacct")
    assert cgroup2_path(entries) == "/"


def test_parse_proc_cgroup_v2_in_a_pod() -> None:
    path = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope"
    assert cgroup2_path(parse_proc_cgroup(f"0::{path}\n")) == path


def test_parse_proc_cgroup_paths_may_contain_colons() -> None:
    (entry,) = parse_proc_cgroup("0::/system.slice/containerd.service/x.slice:cri-containerd:1\n")
    assert entry.path == "/system.slice/containerd.service/x.slice:cri-containerd:1"


def test_cgroup2_path_absent_on_v1_only() -> None:
    assert cgroup2_path(parse_proc_cgroup("4:memory:/\n1:name=systemd:/\n")) is None
