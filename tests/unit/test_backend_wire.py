"""Decoding ring-buffer records into events (no BPF: records built with the
ctypes mirror), the #define reader, and the loader's cflags."""

from __future__ import annotations

import ctypes
import socket
from pathlib import Path

from podtrace_agent.backend import (
    BackendOptions,
    CgroupEvent,
    ConnectEvent,
    ExecEvent,
    ExitEvent,
    KubepodsRoot,
    OpenEvent,
)
from podtrace_agent.bpf import wire
from podtrace_agent.bpf.loader import program_cflags
from podtrace_api.nodeconfig import Probe

C = wire.C


def header(kind: int, pid: int = 42, cgroup: int = 7) -> wire.EventHeader:
    return wire.EventHeader(kind, pid, cgroup, 123)


def test_exec_record() -> None:
    rec = wire.ExecRecord(header(C["EVENT_EXEC"]), 1, 1000, b"true", b"/bin/true")
    assert wire.decode(bytes(rec)) == ExecEvent(7, 42, 1, 1000, "true", "/bin/true", 123)


def test_exec_record_without_ppid() -> None:
    rec = wire.ExecRecord(header(C["EVENT_EXEC"]), 0, 0, b"x", b"/x")
    event = wire.decode(bytes(rec))
    assert isinstance(event, ExecEvent) and event.ppid is None


def test_exit_record_with_and_without_code() -> None:
    rec = wire.ExitRecord(header(C["EVENT_EXIT"]), 1, 0, 256, 0, b"false")
    assert wire.decode(bytes(rec)) == ExitEvent(7, 42, 1, 0, "false", 256, 123)
    rec.exit_code = C["NO_EXIT_CODE"]
    event = wire.decode(bytes(rec))
    assert isinstance(event, ExitEvent) and event.exit_code is None


def test_open_record() -> None:
    rec = wire.OpenRecord(header(C["EVENT_OPEN"]), 0o2000000, 0, b"cat", b"/etc/passwd")
    assert wire.decode(bytes(rec)) == OpenEvent(7, 42, "cat", "/etc/passwd", 0o2000000, 123)


def test_connect_records() -> None:
    addr4 = (ctypes.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET, "10.0.0.1"))
    rec = wire.ConnectRecord(header(C["EVENT_CONNECT"]), socket.AF_INET, 443, 0, addr4, b"curl")
    assert wire.decode(bytes(rec)) == ConnectEvent(
        7, 42, "curl", socket.AF_INET, "10.0.0.1", 443, 123
    )
    addr6 = (ctypes.c_uint8 * 16)(*socket.inet_pton(socket.AF_INET6, "fd00::1"))
    rec = wire.ConnectRecord(header(C["EVENT_CONNECT"]), socket.AF_INET6, 80, 0, addr6, b"curl")
    event = wire.decode(bytes(rec))
    assert isinstance(event, ConnectEvent) and event.address == "fd00::1"


def test_cgroup_records() -> None:
    path = b"/kubepods/besteffort/pod1/" + b"c" * 64
    mkdir = wire.CgroupRecord(header(C["EVENT_CGROUP_MKDIR"], cgroup=99), 4, 3, path)
    assert wire.decode(bytes(mkdir)) == CgroupEvent(
        "mkdir", 99, 4, path.decode()[1:], 123, traced=True
    )
    untraced = wire.CgroupRecord(header(C["EVENT_CGROUP_MKDIR"]), 2, C["NO_SLOT"], b"/kubepods/x")
    event = wire.decode(bytes(untraced))
    assert isinstance(event, CgroupEvent) and not event.traced
    rmdir = wire.CgroupRecord(header(C["EVENT_CGROUP_RMDIR"]), 4, 3, path)
    event = wire.decode(bytes(rmdir))
    assert isinstance(event, CgroupEvent) and (event.kind, event.traced) == ("rmdir", False)


def test_cgroup_record_paths_longer_than_256_are_kept_relative_to_the_mount() -> None:
    """A kind node's container path is absolute in the kernel's record and long."""
    node = "/system.slice/docker-" + "d" * 64 + ".scope"
    rel = ("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
           "kubelet-kubepods-besteffort-pod0a1b2c3d_0000_4a4a_8b8b_0123456789ab.slice/"
           "cri-containerd-" + "c" * 64 + ".scope")
    path = f"{node}/{rel}".encode()
    assert len(path) > 256
    rec = wire.CgroupRecord(header(C["EVENT_CGROUP_MKDIR"], cgroup=99), 7, 3, path)
    event = wire.decode(bytes(rec), node)
    assert isinstance(event, CgroupEvent) and (event.path, event.level) == (rel, 7)


def test_short_or_unknown_records_are_skipped() -> None:
    assert wire.decode(b"\x01\x00") is None
    assert wire.decode(bytes(header(999))) is None
    assert wire.decode(bytes(header(C["EVENT_EXEC"]))) is None  # header only


def test_header_constants_cover_the_probe_bits() -> None:
    assert {k: v for k, v in C.items() if k.startswith("PROBE_")} == {
        f"PROBE_{p.name}": int(p) for p in Probe
    }


def test_cflags() -> None:
    root = KubepodsRoot(Path("/sys/fs/cgroup"), "kubepods.slice", 1234, 1)
    flags = program_cflags(
        root,
        BackendOptions(auto_trace_mask=Probe.SYSCALLS | Probe.EXEC, max_traced=64),
        ringbuf_pages=8,
        syscalls={"open": None, "openat": 257, "connect": 42, "prctl": 157},
        offsets={"TASK_TGID_OFF": 1268, "PT_REGS_DI_OFF": 112},
        exit_has_group_dead=True,
    )
    assert flags[1:] == [
        "-DKUBEPODS_ID=1234ULL",
        "-DKUBEPODS_LEVEL=1",
        '-DKUBEPODS_PATH="/kubepods.slice"',
        '-DQOS_BESTEFFORT="kubepods-besteffort.slice/"',
        '-DQOS_BURSTABLE="kubepods-burstable.slice/"',
        "-DAUTO_TRACE_MASK=3",
        "-DMAX_TRACED=64",
        "-DMAX_REMOVED=1024",
        "-DRINGBUF_PAGES=8",
        "-DNR_OPEN=-1",
        "-DNR_OPENAT=257",
        "-DNR_CONNECT=42",
        "-DNR_PRCTL=157",
        "-DPT_REGS_DI_OFF=112",
        "-DTASK_TGID_OFF=1268",
        "-DEXIT_HAS_GROUP_DEAD",
    ]
    assert flags[0].startswith("-I")


def test_a_marker_record_is_its_row_and_no_event() -> None:
    rec = wire.MarkerRecord()
    rec.hdr.type, rec.hdr.cgroup_id = C["EVENT_MARKER"], 77
    rec.counts[157], rec.counts[C["NR_SYSCALLS_MAX"] - 1] = 1, 4
    assert wire.decode_marker(bytes(rec)) == (77, {157: 1, -1: 4})  # the last column: -1
    assert wire.decode(bytes(rec)) is None
    assert wire.decode_marker(bytes(header(C["EVENT_EXEC"])) + bytes(4200)) is None
    assert wire.decode_marker(bytes(rec)[:100]) is None


def test_cflags_of_a_node_in_a_container() -> None:
    """kind: kubepods below the node container's cgroup; the knobs are absolute."""
    root = KubepodsRoot(
        Path("/sys/fs/cgroup"), "kubelet.slice/kubelet-kubepods.slice", 77, 4,
        "/system.slice/docker-abc.scope",
    )
    flags = program_cflags(
        root, BackendOptions(), ringbuf_pages=8, syscalls={}, offsets={},
        exit_has_group_dead=False,
    )
    assert flags[1:6] == [
        "-DKUBEPODS_ID=77ULL",
        "-DKUBEPODS_LEVEL=4",
        '-DKUBEPODS_PATH="/system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice"',
        '-DQOS_BESTEFFORT="kubelet-kubepods-besteffort.slice/"',
        '-DQOS_BURSTABLE="kubelet-kubepods-burstable.slice/"',
    ]
