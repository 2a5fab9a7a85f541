# ruff: noqa: E501  (mountinfo samples are verbatim kernel lines)
"""tracefs location, the BCC check and the backend choice."""

from __future__ import annotations

import pytest

from podtrace_agent.discovery.choice import choose_backend, fallback
from podtrace_agent.discovery.kernel import (
    check_bcc,
    locate_tracefs,
    tracefs_candidates,
)
from podtrace_agent.discovery.procfs import parse_mountinfo
from podtrace_agent.discovery.report import BccCheck
from podtrace_api.nodetracer import BackendName

TRACEFS_MOUNTED = "60 23 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime - tracefs tracefs rw\n"
DEBUGFS_MOUNTED = "61 23 0:7 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime - debugfs debugfs rw\n"
ELSEWHERE = "62 27 0:12 / /tracing rw,relatime - tracefs nodev rw\n"


@pytest.mark.parametrize(
    ("mountinfo", "expected"),
    [
        ("", []),
        (TRACEFS_MOUNTED, ["/sys/kernel/tracing"]),
        (DEBUGFS_MOUNTED, ["/sys/kernel/debug/tracing"]),
        (ELSEWHERE + DEBUGFS_MOUNTED + TRACEFS_MOUNTED,
         ["/sys/kernel/tracing", "/tracing", "/sys/kernel/debug/tracing"]),
    ],
)
def test_tracefs_candidates(mountinfo: str, expected: list[str]) -> None:
    assert tracefs_candidates(parse_mountinfo(mountinfo)) == expected


class Machine:
    """tracefs as the kernel would answer: usable where mounted, mount() may fail."""

    def __init__(self, mounted: set[str], mount_error: str | None = None) -> None:
        self.mounted = mounted
        self.mount_error = mount_error
        self.mount_calls: list[str] = []

    def usable(self, path: str) -> bool:
        return path in self.mounted

    def mount(self, target: str) -> str | None:
        self.mount_calls.append(target)
        if self.mount_error is None:
            self.mounted.add(target)
        return self.mount_error


def test_locate_uses_the_first_usable() -> None:
    machine = Machine({"/sys/kernel/debug/tracing"})
    mounts = parse_mountinfo(TRACEFS_MOUNTED + DEBUGFS_MOUNTED)
    path, problem = locate_tracefs(mounts, True, machine.usable, machine.mount)
    assert (path, problem, machine.mount_calls) == ("/sys/kernel/debug/tracing", None, [])


def test_locate_mounts_when_allowed() -> None:
    machine = Machine(set())
    path, problem = locate_tracefs([], True, machine.usable, machine.mount)
    assert (path, problem, machine.mount_calls) == ("/sys/kernel/tracing", None,
                                                    ["/sys/kernel/tracing"])


def test_locate_does_not_mount_when_not_allowed() -> None:
    machine = Machine(set())
    path, problem = locate_tracefs([], False, machine.usable, machine.mount)
    assert path == "" and machine.mount_calls == []
    assert problem is not None and problem.fatal and problem.reason == "TracefsMissing"
    assert "mount -t tracefs nodev /sys/kernel/tracing" in problem.message


def test_locate_reports_a_failed_mount() -> None:
    machine = Machine(set(), "EPERM: Operation not permitted")
    path, problem = locate_tracefs([], True, machine.usable, machine.mount)
    assert path == ""
    assert problem is not None and "EPERM: Operation not permitted" in problem.message


@pytest.mark.parametrize(
    ("importable", "headers", "available", "says"),
    [
        (True, True, True, "kernel headers at /lib/modules/6.18.1/build"),
        (False, True, False, "apt-get install python3-bpfcc"),
        (False, False, False, "never `pip install bcc`"),
        (True, False, False, "install linux-headers-6.18.1"),
    ],
)
def test_check_bcc(importable: bool, headers: bool, available: bool, says: str) -> None:
    check = check_bcc("6.18.1", importable, headers)
    assert check.available is available
    assert says in check.reason


OK = BccCheck(True, "bcc importable")
NO = BccCheck(False, "no kernel headers")
TFS = "/sys/kernel/tracing"


@pytest.mark.parametrize(
    ("requested", "bcc", "tracefs", "name", "says"),
    [
        ("auto", OK, TFS, BackendName.BCC, "auto: bcc importable"),
        ("auto", NO, TFS, BackendName.FTRACE, "bcc unavailable (no kernel headers)"),
        ("auto", OK, "", BackendName.NONE, "no tracefs"),
        ("bcc", OK, TFS, BackendName.BCC, "--backend bcc"),
        ("bcc", NO, TFS, BackendName.NONE, "--backend bcc, but no kernel headers"),
        ("ftrace", OK, TFS, BackendName.FTRACE, "--backend ftrace"),
        ("ftrace", NO, "", BackendName.NONE, "no tracefs"),
    ],
)
def test_choose_backend(
    requested: str, bcc: BccCheck, tracefs: str, name: BackendName, says: str
) -> None:
    choice = choose_backend(requested, bcc, tracefs)  # type: ignore[arg-type]
    assert choice.name is name
    assert says in choice.reason
    assert choice.to_status().name == name.value


def test_fallback_after_bcc_failed_to_start() -> None:
    assert fallback("auto", "verifier said no", TFS).name is BackendName.FTRACE
    assert "verifier said no" in fallback("auto", "verifier said no", TFS).reason
    assert fallback("bcc", "verifier said no", TFS).name is BackendName.NONE
    assert fallback("auto", "x", "").name is BackendName.NONE
