"""The ctypes mirror of bpf/events.h and the decoding of ring-buffer records.

Constants are read from events.h itself (its `#define NAME <number>` lines), so
array sizes and type codes are declared once, in C. The structs are mirrored
field by field; tests/kernel/test_bpf_layout.py compiles events.h with cc and
compares every size and offset with these classes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
import socket
from pathlib import Path

from ..backend import (
    CgroupEvent,
    ConnectEvent,
    Event,
    ExecEvent,
    ExitEvent,
    OpenEvent,
)

BPF_DIR = Path(__file__).resolve().parent
EVENTS_H = BPF_DIR / "events.h"

_DEFINE = re.compile(r"^#define\s+([A-Z][A-Z0-9_]*)\s+(-?(?:0x[0-9a-fA-F]+|\d+))\b", re.M)


def header_constants(text: str) -> dict[str, int]:
    """The numeric `#define`s of a C header.

    >>> header_constants("#define A 0x10\\n#define B -1 /* x */\\n#define C (A)")
    {'A': 16, 'B': -1}
    """
    return {name: int(value, 0) for name, value in _DEFINE.findall(text)}


C = header_constants(EVENTS_H.read_text())


class TracedCgroup(ctypes.Structure):
    _fields_ = [
        ("mask", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("open_prefixes", ctypes.c_uint32),
        ("connect_ports", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class OpenPrefix(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint32), ("str", ctypes.c_char * C["PREFIX_MAX"])]


class EventHeader(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("timestamp_ns", ctypes.c_uint64),
    ]


class ExecRecord(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("comm", ctypes.c_char * C["TASK_COMM_LEN"]),
        ("filename", ctypes.c_char * C["MAX_FILENAME"]),
    ]


class ExitRecord(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("exit_code", ctypes.c_int32),
        ("_pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * C["TASK_COMM_LEN"]),
    ]


class OpenRecord(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("flags", ctypes.c_int32),
        ("_pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * C["TASK_COMM_LEN"]),
        ("path", ctypes.c_char * C["MAX_OPEN_PATH"]),
    ]


class ConnectRecord(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("family", ctypes.c_uint16),
        ("port", ctypes.c_uint16),
        ("_pad", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * C["TASK_COMM_LEN"]),
    ]


class CgroupRecord(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("level", ctypes.c_int32),
        ("slot", ctypes.c_uint32),
        ("path", ctypes.c_char * C["MAX_CGROUP_PATH"]),
    ]


class MarkerRecord(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("slot", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("counts", ctypes.c_uint64 * C["NR_SYSCALLS_MAX"]),
    ]


# C struct name -> mirror, for the layout test.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "traced_cgroup": TracedCgroup,
    "open_prefix": OpenPrefix,
    "event_header": EventHeader,
    "exec_event": ExecRecord,
    "exit_event": ExitRecord,
    "open_event": OpenRecord,
    "connect_event": ConnectRecord,
    "cgroup_event": CgroupRecord,
    "marker_event": MarkerRecord,
}

_RECORDS: dict[int, type[ctypes.Structure]] = {
    C["EVENT_EXEC"]: ExecRecord,
    C["EVENT_EXIT"]: ExitRecord,
    C["EVENT_OPEN"]: OpenRecord,
    C["EVENT_CONNECT"]: ConnectRecord,
    C["EVENT_CGROUP_MKDIR"]: CgroupRecord,
    C["EVENT_CGROUP_RMDIR"]: CgroupRecord,
}


def decode_marker(data: bytes) -> tuple[int, dict[int, int]] | None:
    """A marker record as (cgroup id, syscall nr → count, nonzero only) in the keys
    the loader's counter rows use (the last column, every number beyond the table,
    as -1); None for any other record."""
    if len(data) < ctypes.sizeof(MarkerRecord):
        return None
    if EventHeader.from_buffer_copy(data).type != C["EVENT_MARKER"]:
        return None
    rec = MarkerRecord.from_buffer_copy(data)
    last = C["NR_SYSCALLS_MAX"] - 1
    return rec.hdr.cgroup_id, {-1 if i == last else i: c for i, c in enumerate(rec.counts) if c}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _address(family: int, addr: ctypes.Array[ctypes.c_uint8]) -> str:
    raw = bytes(addr)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def decode(data: bytes, cgroup_root: str = "") -> Event | None:
    """One ring-buffer record as an Event; None for an unknown or short record.

    `cgroup_root` is stripped from cgroup paths: the kernel reports them from
    the hierarchy root with a leading "/", the interface relative to the mount.
    """
    if len(data) < ctypes.sizeof(EventHeader):
        return None
    kind = EventHeader.from_buffer_copy(data).type
    record_type = _RECORDS.get(kind)
    if record_type is None or len(data) < ctypes.sizeof(record_type):
        return None
    rec = record_type.from_buffer_copy(data)
    hdr = rec.hdr
    if isinstance(rec, ExecRecord):
        return ExecEvent(
            cgroup_id=hdr.cgroup_id,
            pid=hdr.pid,
            ppid=rec.ppid or None,
            uid=rec.uid,
            comm=_text(rec.comm),
            filename=_text(rec.filename),
            timestamp_ns=hdr.timestamp_ns,
        )
    if isinstance(rec, ExitRecord):
        return ExitEvent(
            cgroup_id=hdr.cgroup_id,
            pid=hdr.pid,
            ppid=rec.ppid or None,
            uid=rec.uid,
            comm=_text(rec.comm),
            exit_code=None if rec.exit_code == C["NO_EXIT_CODE"] else rec.exit_code,
            timestamp_ns=hdr.timestamp_ns,
        )
    if isinstance(rec, OpenRecord):
        return OpenEvent(
            cgroup_id=hdr.cgroup_id,
            pid=hdr.pid,
            comm=_text(rec.comm),
            path=_text(rec.path),
            flags=rec.flags,
            timestamp_ns=hdr.timestamp_ns,
        )
    if isinstance(rec, ConnectRecord):
        return ConnectEvent(
            cgroup_id=hdr.cgroup_id,
            pid=hdr.pid,
            comm=_text(rec.comm),
            family=rec.family,
            address=_address(rec.family, rec.addr),
            port=rec.port,
            timestamp_ns=hdr.timestamp_ns,
        )
    assert isinstance(rec, CgroupRecord)
    return CgroupEvent(
        kind="mkdir" if kind == C["EVENT_CGROUP_MKDIR"] else "rmdir",
        cgroup_id=hdr.cgroup_id,
        level=rec.level,
        path=_relative(_text(rec.path), cgroup_root),
        timestamp_ns=hdr.timestamp_ns,
        traced=kind == C["EVENT_CGROUP_MKDIR"] and rec.slot != C["NO_SLOT"],
    )


def _relative(path: str, root: str) -> str:
    """A kernel cgroup path relative to the mount's root.

    >>> _relative("/kubepods/besteffort", "")
    'kubepods/besteffort'
    """
    root = "/" + root.strip("/") if root.strip("/") else ""
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path.lstrip("/")
