"""Plain helpers of the kernel tier (fixtures are in conftest.py): the
kubelet-like hierarchy, the helper program's runs, an event collector."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.prereq import missing
from podtrace_agent.backend import Backend, BackendOptions, Event, KubepodsRoot
from podtrace_agent.fsretry import rmdir_retrying
from podtrace_api.nodeconfig import Probe

HELPER_C = Path(__file__).with_name("helper.c")
ALL_PROBES = Probe.SYSCALLS | Probe.EXEC | Probe.EXIT
WAIT_S = 10.0


def cgroup2_mount() -> Path | None:
    """The cgroup2 mount: /sys/fs/cgroup/unified on hybrid hosts, /sys/fs/cgroup on v2."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def kill_and_remove(directory: Path) -> None:
    """Kill a cgroup's processes (cgroup.kill, 5.14+) and remove it; quiet if gone."""
    if not directory.exists():
        return
    kill = directory / "cgroup.kill"
    if kill.exists() and (directory / "cgroup.procs").read_text().strip():
        kill.write_text("1")
    rmdir_retrying(directory, timeout=WAIT_S, interval=0.02)


@dataclass
class Hierarchy:
    """Creates pods and containers below a kubepods cgroup; removes only its own."""

    cgroup2: Path
    kubepods: str  # relative to cgroup2, e.g. "kubepods"
    qos: str = "besteffort"
    created: list[Path] = field(default_factory=list)

    def mkdir(self, path: Path) -> Path:
        for parent in reversed([path, *path.parents]):
            if parent.is_relative_to(self.cgroup2) and not parent.exists():
                parent.mkdir()
                self.created.append(parent)
        return path

    def root(self) -> KubepodsRoot:
        self.mkdir(self.cgroup2 / self.kubepods)
        return KubepodsRoot.at(self.cgroup2, self.kubepods)

    def pod(self, qos: str | None = None) -> Path:
        qos = self.qos if qos is None else qos
        parts = [self.kubepods, qos] if qos else [self.kubepods]
        return self.mkdir(self.cgroup2.joinpath(*parts, f"pod{uuid.uuid4()}"))

    def container(self, pod: Path | None = None) -> Path:
        return self.mkdir((pod or self.pod()) / uuid.uuid4().hex.ljust(64, "0"))

    def outside(self) -> Path:
        return self.mkdir(self.cgroup2 / f"podtrace-test-outside-{uuid.uuid4().hex[:12]}")

    def rel(self, directory: Path) -> str:
        return str(directory.relative_to(self.cgroup2))

    def remove(self, directory: Path) -> None:
        for child in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            if child.is_relative_to(directory):
                kill_and_remove(child)
                self.created.remove(child)

    def cleanup(self) -> None:
        for directory in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            # kubepods shared with another tier and not empty: leave it.
            with contextlib.suppress(OSError):
                kill_and_remove(directory)
        self.created.clear()


def cgroup_id(directory: Path) -> int:
    return directory.stat().st_ino


class Collector:
    """Keeps every event a shared backend returns, so tests can wait for theirs."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.events: list[Event] = []

    def drain(self, timeout: float = 0.05) -> list[Event]:
        new = self.backend.poll(timeout)
        self.events.extend(new)
        return new

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = WAIT_S) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event within {timeout}s")
            self.drain(0.1)

    def about(self, cgroup_id: int) -> list[Event]:
        return [e for e in self.events if e.cgroup_id == cgroup_id]


def require_bcc() -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        missing("BCC's Python module (apt-get install python3-bpfcc; scripts/make-venv)")
    build = Path("/lib/modules") / os.uname().release / "build"
    if not build.exists():
        missing(f"kernel headers at {build} (run scripts/install-deps)")


def require_tracefs() -> None:
    from podtrace_agent.ftrace.tracefs import TracefsError, find_tracefs

    try:
        find_tracefs()
    except TracefsError as err:
        missing(f"{err.strerror} (run scripts/install-deps)")


def start_backend(name: str, kubepods: KubepodsRoot, **kwargs: object) -> Backend:
    options = BackendOptions(auto_trace_mask=ALL_PROBES)
    backend: Backend
    if name == "bcc":
        require_bcc()
        from podtrace_agent.bpf.loader import BccBackend

        backend = BccBackend(kubepods, options, **kwargs)  # type: ignore[arg-type]
    else:
        require_tracefs()
        from podtrace_agent.ftrace.backend import FtraceBackend

        backend = FtraceBackend(kubepods, options, **kwargs)  # type: ignore[arg-type]
    backend.start()
    return backend


@dataclass
class HelperRun:
    """One helper process, possibly waiting on its go fifo."""

    process: subprocess.Popen[bytes]
    fifo: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        if self.fifo is not None:
            with self.fifo.open("w") as go:
                go.write("g")

    def wait(self) -> int:
        return self.process.wait(timeout=60)


def run_helper(
    helper: Path,
    directory: Path | None,
    n: int,
    program: tuple[str, ...] = ("/bin/true",),
    *,
    wait_for_go: bool,
    tmp_path: Path,
) -> HelperRun:
    """Start the helper: it joins `directory` (None: stays where it is), waits
    for go if asked, makes n getppid calls and execs `program`. Returns once it
    has joined the cgroup."""
    fifo = None
    if wait_for_go:
        fifo = tmp_path / f"go-{uuid.uuid4().hex[:8]}"
        os.mkfifo(fifo)
    procs = "-" if directory is None else str(directory / "cgroup.procs")
    process = subprocess.Popen([str(helper), procs, str(fifo or "-"), str(n), *program])
    run = HelperRun(process, fifo)
    if directory is not None and wait_for_go:
        deadline = time.monotonic() + WAIT_S
        while str(process.pid) not in (directory / "cgroup.procs").read_text().split():
            assert process.poll() is None, f"helper exited early: {process.returncode}"
            assert time.monotonic() < deadline, "helper did not join its cgroup"
            time.sleep(0.01)
    return run


def wait_noticed(collector: Collector, cgroup: int, pid: int) -> None:
    """ftrace only sees a task once its pid is in the instance's filter (the
    bcc backend filters in kernel by cgroup, so there is nothing to wait for)."""
    pid_filter = getattr(collector.backend, "pid_filter", None)
    if pid_filter is None:
        return
    deadline = time.monotonic() + WAIT_S
    while pid not in pid_filter(cgroup):
        assert time.monotonic() < deadline, f"backend never added pid {pid} of cgroup {cgroup}"
        collector.drain(0.02)


def have(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"`{name}` not found")
    return path  # type: ignore[return-value]
