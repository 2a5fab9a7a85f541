"""Whether a cgroup id still resolves to a cgroup, without knowing its path.

A cgroup2 id is its kernfs node id, which is also the file handle cgroup2
exports (type FILEID_KERNFS, 8 bytes): open_by_handle_at(2) on the cgroup2
mount opens the directory while it exists and fails with ESTALE once it is
removed (also before the node is activated, right after cgroup_mkdir).
Needs CAP_DAC_READ_SEARCH, which the agent has as root.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

FILEID_KERNFS = 0xFE
_GONE = {errno.ESTALE, errno.ENOENT}


class _FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_uint64),
    ]


class CgroupHandles:
    """Resolves cgroup ids below one cgroup2 mount (kept open)."""

    def __init__(self, cgroup2: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._mount = os.open(cgroup2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def resolve(self, cgroup_id: int) -> int:
        """0 when the id opens a cgroup, else the errno."""
        handle = _FileHandle(8, FILEID_KERNFS, cgroup_id)
        fd = self._libc.open_by_handle_at(
            self._mount, ctypes.byref(handle), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        )
        if fd < 0:
            return ctypes.get_errno() or errno.EIO
        os.close(fd)
        return 0

    def alive(self, cgroup_id: int) -> bool:
        """False only when the kernel says the id resolves to nothing."""
        return self.resolve(cgroup_id) not in _GONE

    def close(self) -> None:
        if self._mount >= 0:
            os.close(self._mount)
            self._mount = -1
