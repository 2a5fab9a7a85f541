"""Pinned BPF objects, so that the kernel keeps counting while the agent is gone.

The bcc backend pins its shared maps and the links that attach its programs
under one directory per agent instance and program layout:

    /sys/fs/bpf/podtrace/<instance>/<layout>/{traced,counts,...,events}
                                            /link_<function>

`<instance>` is the node's name (several agents of a multi-node test cluster
share one host's bpffs) or `standalone`; `<layout>` is a hash of the program's
source and knobs (`layout_id`): an agent whose program would differ in any way
never reads another layout's maps. With the links pinned, the programs stay
attached after a `kill -9` and count into the pinned maps; the next agent of the
same layout adopts them without attaching anything (no gap, no double count),
while one of another layout removes them (`remove`) and starts fresh.

Why by hand: BCC 0.26 pins maps (`BPF_TABLE_PINNED`: reused when the pin
exists, created and pinned when not), but not the attachments, and its
libbpf is not exported; no maintained Python binding of libbpf exists in
Debian. So the few bpf(2)/perf_event_open(2) commands needed (pin, get, link a
tracepoint program) are issued here through ctypes, with the kernel's ABI
structs (include/uapi/linux/bpf.h, perf_event.h).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

BPFFS = Path("/sys/fs/bpf")
PIN_ROOT = BPFFS / "podtrace"
LINK_PREFIX = "link_"

# bpf(2) commands and the perf_event attach type (include/uapi/linux/bpf.h).
BPF_OBJ_PIN, BPF_OBJ_GET, BPF_LINK_CREATE = 6, 7, 28
BPF_PERF_EVENT = 41
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # bpf, perf_event_open

_libc = ctypes.CDLL(None, use_errno=True)


class PinError(OSError):
    """A pin, link or bpffs operation failed (errno and a message that says what to fix)."""


def layout_id(sources: Iterable[bytes], cflags: Iterable[str]) -> str:
    """The layout of one build of the program: its sources and knobs.

    >>> layout_id([b"a"], ["-DX=1"]) == layout_id([b"a"], ["-DX=1"]) != layout_id([b"a"], [])
    True
    """
    digest = hashlib.sha256()
    for chunk in sources:
        digest.update(len(chunk).to_bytes(8, "little") + chunk)
    for flag in sorted(cflags):
        digest.update(flag.encode() + b"\0")
    return "v" + digest.hexdigest()[:16]


def instance_name(text: str) -> str:
    """A directory name for an agent instance (a node's name is one already).

    >>> instance_name("kind-worker"), instance_name("../x")
    ('kind-worker', '.._x')
    """
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:200]
    if cleaned in ("", ".", ".."):
        cleaned = cleaned.replace(".", "_") or "_"
    return cleaned.replace("/", "_")


def is_bpffs(path: Path, mounts: str) -> bool:
    """Whether `path` is a bpf filesystem mount point in /proc/self/mounts text.

    >>> is_bpffs(Path("/sys/fs/bpf"), "bpf /sys/fs/bpf bpf rw 0 0\\n")
    True
    """
    return any(
        len(fields) > 2 and fields[1] == str(path) and fields[2] == "bpf"
        for fields in (line.split() for line in mounts.splitlines())
    )


def ensure_bpffs(allow_mount: bool) -> None:
    """Make sure /sys/fs/bpf is a bpffs, mounting one when allowed. In a pod it
    must be the host's (a hostPath volume), or pins die with the pod."""
    if is_bpffs(BPFFS, Path("/proc/self/mounts").read_text()):
        return
    if not allow_mount:
        raise PinError(errno.ENOENT, f"{BPFFS} is not a bpf filesystem: mount one "
                                     f"(mount -t bpf bpf {BPFFS}) or mount the host's into the pod")
    BPFFS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise PinError(errno.EPERM, f"mounting a bpf filesystem at {BPFFS}: "
                                    f"{done.stderr.strip()}")


def _syscall(which: int, *args: object) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise PinError(errno.ENOSYS, f"pinning is not supported on {platform.machine()}")
    rc = _libc.syscall(ctypes.c_long(numbers[which]), *args)
    if rc < 0:
        err = ctypes.get_errno()
        raise PinError(err, os.strerror(err))
    return int(rc)


class _ObjAttr(ctypes.Structure):  # union bpf_attr, BPF_OBJ_* commands
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32)]


class _LinkAttr(ctypes.Structure):  # union bpf_attr, BPF_LINK_CREATE
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("bpf_cookie", ctypes.c_uint64), ("_rest", ctypes.c_uint64 * 4)]


class _PerfEventAttr(ctypes.Structure):  # struct perf_event_attr, the fields used
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
                ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("_rest", ctypes.c_uint8 * 84)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    return _syscall(0, ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))


def obj_pin(fd: int, path: Path) -> None:
    name = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjAttr(ctypes.addressof(name), fd, 0, 0))


def obj_get(path: Path) -> int:
    """A new fd of the pinned object at `path` (close it)."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _ObjAttr(ctypes.addressof(name), 0, 0, 0))


def link_tracepoint(prog_fd: int, tracefs: Path, category: str, event: str) -> int:
    """Attach a tracepoint program with a BPF link (which, unlike the perf event
    BCC attaches with, can be pinned); the link's fd."""
    tp_id = int((tracefs / "events" / category / event / "id").read_text())
    attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=ctypes.sizeof(_PerfEventAttr),
                          config=tp_id, sample_period=1, wakeup_events=1)
    perf_fd = _syscall(1, ctypes.byref(attr), ctypes.c_int(-1), ctypes.c_int(0),
                       ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    try:
        return _bpf(BPF_LINK_CREATE, _LinkAttr(prog_fd, perf_fd, BPF_PERF_EVENT, 0))
    finally:
        os.close(perf_fd)  # the link holds the perf event


def pin_link(fd: int, path: Path) -> None:
    """Pin a link and close our fd: from now on the pin alone keeps it attached."""
    try:
        obj_pin(fd, path)
    finally:
        os.close(fd)


def links(directory: Path) -> dict[str, Path]:
    """Function name → pinned link in a layout directory."""
    if not directory.is_dir():
        return {}
    return {p.name.removeprefix(LINK_PREFIX): p for p in directory.iterdir()
            if p.name.startswith(LINK_PREFIX)}


def remove(directory: Path) -> None:
    """Unpin everything in `directory` and remove it: links first (their programs
    detach), then the maps (freed once no program holds them)."""
    if not directory.exists():
        return
    entries = sorted(directory.iterdir(), key=lambda p: not p.name.startswith(LINK_PREFIX))
    for entry in entries:
        if entry.is_dir():
            remove(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    with contextlib.suppress(FileNotFoundError):
        directory.rmdir()


def remove_tree(root: Path = PIN_ROOT) -> None:
    """Remove every pin under `root` (uninstall); quiet when there is none."""
    if root.exists():
        remove(root)
    if root == PIN_ROOT:
        return
    with contextlib.suppress(OSError):
        root.parent.rmdir()  # podtrace/ when this was its last instance


class InstanceLock:
    """An exclusive flock on the instance's directory: one agent per instance."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self._fd)
            raise PinError(errno.EBUSY, f"another podtrace agent uses {directory}: give this "
                                        "one another instance name (--instance)") from err

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def stale_layouts(instance: Path, layout: str) -> list[Path]:
    """The instance's directories of other layouts (another agent version or knobs)."""
    if not instance.is_dir():
        return []
    return sorted(p for p in instance.iterdir() if p.is_dir() and p.name != layout)
