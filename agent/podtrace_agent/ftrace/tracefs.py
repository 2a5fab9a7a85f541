"""Thin access to tracefs: where it is, event formats, and ftrace instances.

An instance (tracefs/instances/<name>) is a private ring buffer with its own
event enables, pid filter and options; creating the directory creates it,
rmdir removes it. Nothing here parses trace output (see parse.py).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from podtrace_agent.fsretry import rmdir_retrying

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]*);\s*offset:\d+;\s*size:\d+;", re.M)


class TracefsError(OSError):
    """tracefs is missing or refused a write."""


def find_tracefs() -> Path:
    """The mounted tracefs (it is mounted at /sys/kernel/tracing where debugfs is not)."""
    for candidate in TRACEFS_CANDIDATES:
        if (candidate / "trace").exists():
            return candidate
    raise TracefsError(
        errno.ENOENT, "tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing"
    )


def field_names(format_text: str) -> list[str]:
    """Field names of an event's `format` file, common_* fields included.

    >>> field_names("\\tfield:int root;\\toffset:8;\\tsize:4;\\tsigned:1;\\n"
    ...             "\\tfield:__data_loc char[] path;\\toffset:24;\\tsize:4;\\tsigned:0;")
    ['root', 'path']
    """
    names = []
    for match in _FIELD.finditer(format_text):
        decl = match.group("decl").strip()
        names.append(re.sub(r"\[.*\]$", "", decl.split()[-1]))
    return names


def event_fields(tracefs: Path, event: str) -> list[str]:
    """Field names of `event` ("sched/sched_process_exit")."""
    return field_names((tracefs / "events" / event / "format").read_text())


def write(path: Path, value: str, append: bool = False) -> None:
    """Write a tracefs control file in one write(2), as the kernel expects."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags)
    try:
        os.write(fd, value.encode())
    except OSError as err:
        raise TracefsError(err.errno, f"writing {value!r} to {path}: {err.strerror}") from err
    finally:
        os.close(fd)


class Instance:
    """One ftrace instance: tracefs/instances/<name>."""

    def __init__(self, tracefs: Path, name: str) -> None:
        self.name = name
        self.path = tracefs / "instances" / name

    def create(self) -> None:
        self.path.mkdir()

    def remove(self) -> None:
        """Disable tracing and remove the instance (an open trace_pipe makes it EBUSY)."""
        if not self.path.exists():
            return
        try:
            write(self.path / "tracing_on", "0")
            write(self.path / "events" / "enable", "0")
        except TracefsError:
            pass
        # A reader that just closed trace_pipe_raw can keep the instance busy for a moment:
        # retry briefly rather than leave the instance behind.
        rmdir_retrying(self.path, timeout=2.0, interval=0.05, busy={errno.EBUSY})

    def set(self, relative: str, value: str, append: bool = False) -> None:
        write(self.path / relative, value, append=append)

    def enable(self, event: str, filter_expr: str | None = None) -> None:
        """Enable `event` ("raw_syscalls/sys_enter"), with an optional filter."""
        if filter_expr:
            self.set(f"events/{event}/filter", filter_expr)
        self.set(f"events/{event}/enable", "1")

    def cpu_stats(self) -> list[str]:
        """Each CPU's per_cpu/cpuN/stats text."""
        per_cpu = self.path / "per_cpu"
        return [
            (per_cpu / cpu / "stats").read_text()
            for cpu in sorted(os.listdir(per_cpu))
            if cpu.startswith("cpu")
        ]


def instances(tracefs: Path, prefix: str) -> list[Instance]:
    """Existing instances whose name starts with `prefix`."""
    root = tracefs / "instances"
    return [Instance(tracefs, name) for name in sorted(os.listdir(root)) if name.startswith(prefix)]
