"""Kernel facts: release, BTF, where tracefs is (mounting it when allowed), and
whether BCC can compile here. Pure checks over facts; the I/O is the few
functions at the bottom."""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from .procfs import Mount
from .report import BccCheck, Problem

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
BTF = Path("/sys/kernel/btf/vmlinux")


def tracefs_candidates(mounts: list[Mount]) -> list[str]:
    """Where tracefs may be, best first: tracefs mounts (/sys/kernel/tracing
    first), then <debugfs>/tracing (the kernel automounts tracefs there)."""
    tracefs = sorted(
        {m.mount_point for m in mounts if m.fstype == "tracefs"},
        key=lambda p: (p != TRACEFS, p != DEBUGFS_TRACING, p),
    )
    debugfs = [f"{m.mount_point}/tracing" for m in mounts if m.fstype == "debugfs"]
    return [*tracefs, *(p for p in debugfs if p not in tracefs)]


def check_bcc(release: str, importable: bool, headers: bool) -> BccCheck:
    """BCC compiles C at run time: it needs its Python module and kernel headers."""
    if not importable:
        return BccCheck(
            False,
            "the python module bcc is missing: apt-get install python3-bpfcc (never "
            "`pip install bcc`, an unrelated package) and run scripts/make-venv",
        )
    build = f"/lib/modules/{release}/build"
    if not headers:
        return BccCheck(
            False,
            f"no kernel headers at {build}: install linux-headers-{release}, or link {build} "
            f"to the closest installed headers as scripts/install-deps does (in a pod: mount "
            f"the host's /lib/modules and /usr/src)",
        )
    return BccCheck(True, f"bcc importable and kernel headers at {build}")


def tracefs_problem(tried: list[str], mount_error: str | None) -> Problem:
    """No tracefs: both backends attach to tracepoints through it."""
    where = ", ".join(tried) if tried else TRACEFS
    tail = f" (mounting it failed: {mount_error})" if mount_error else ""
    return Problem(
        "TracefsMissing",
        f"tracefs is not available at {where}{tail}: mount -t tracefs nodev {TRACEFS} "
        f"(in a pod: a hostPath volume for {TRACEFS}, and privileges to use it).",
        fatal=True,
    )


# --- I/O ------------------------------------------------------------------------


def kernel_release() -> str:
    return os.uname().release


def btf_present() -> bool:
    return BTF.exists()


def bcc_facts(release: str) -> tuple[bool, bool]:
    """(bcc importable, /lib/modules/<release>/build exists), without importing bcc."""
    return (
        importlib.util.find_spec("bcc") is not None,
        Path(f"/lib/modules/{release}/build").exists(),
    )


def try_bcc_compile() -> BccCheck:
    """Compile (not load) a tiny program: proves clang and the headers work together."""
    try:
        from bcc import BPF  # type: ignore[import-not-found]

        BPF(text="int podtrace_noop(void *ctx) { return 0; }").cleanup()
    except Exception as err:  # BCC raises bare Exception on compile errors
        return BccCheck(False, f"BCC cannot compile a test program: {err}")
    return BccCheck(True, "BCC compiled a test program")


def mount_tracefs(target: str = TRACEFS) -> str | None:
    """mount -t tracefs nodev <target>; None on success, else the error."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) == 0:
        return None
    code = ctypes.get_errno()
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"


def usable_tracefs(path: str) -> bool:
    return Path(path, "events").is_dir()


def locate_tracefs(
    mounts: list[Mount],
    allow_mount: bool,
    usable: Callable[[str], bool] = usable_tracefs,
    mount: Callable[[str], str | None] = mount_tracefs,
) -> tuple[str, Problem | None]:
    """The tracefs directory to use, mounting it at /sys/kernel/tracing if needed and allowed."""
    candidates = tracefs_candidates(mounts)
    for path in candidates:
        if usable(path):
            return path, None
    if not allow_mount:
        return "", tracefs_problem(candidates, None)
    error = mount(TRACEFS)
    if error is None and usable(TRACEFS):
        return TRACEFS, None
    return "", tracefs_problem(candidates or [TRACEFS], error or "mounted but no events/")
