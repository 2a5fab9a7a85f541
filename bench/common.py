"""What the benchmarks share: the cgroup2 mount, a private kubelet-like
hierarchy (no kubelet needed: a container is a cgroup below
<kubepods>/besteffort/pod<uid>/), the C loops built once, a process's RSS and
CPU from /proc, and summary statistics. Benchmarks print figures; nothing here
passes or fails on time.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from podtrace_agent.fsretry import rmdir_retrying

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    sys.exit("no cgroup2 mount")


def need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root (BPF, tracefs, cgroups)")


_built: dict[str, Path] = {}


def build(name: str) -> Path:
    """bench/<name>.c compiled once per process (-O2, pthreads)."""
    if name not in _built:
        out = Path(tempfile.mkdtemp(prefix="podtrace-bench-")) / name
        subprocess.run(["cc", "-O2", "-Wall", "-pthread", "-o", str(out),
                        str(BENCH / f"{name}.c")], check=True)  # fmt: skip
        _built[name] = out
    return _built[name]


def kill_and_remove(directory: Path) -> None:
    """Kill a cgroup's processes and remove it, retrying while it is busy."""
    with contextlib.suppress(OSError):
        if (directory / "cgroup.procs").read_text().strip():
            (directory / "cgroup.kill").write_text("1")
    rmdir_retrying(directory, timeout=10, interval=0.02)


@dataclass
class Hierarchy:
    """A private kubepods `<cgroup2>/podtrace-bench-<hex>/kubepods` with containers
    made on demand, and cgroups outside it; removed deepest first on exit."""

    cgroup2: Path = field(default_factory=cgroup2_mount)
    name: str = field(default_factory=lambda: f"podtrace-bench-{uuid.uuid4().hex[:8]}")
    made: list[Path] = field(default_factory=list)

    @property
    def kubepods_rel(self) -> str:
        return f"{self.name}/kubepods"

    def mkdir(self, path: Path) -> Path:
        for parent in reversed([path, *path.parents]):
            if parent.is_relative_to(self.cgroup2) and not parent.exists():
                parent.mkdir()
                self.made.append(parent)
        return path

    def kubepods(self):  # -> KubepodsRoot
        from podtrace_agent.backend import KubepodsRoot

        self.mkdir(self.cgroup2 / self.kubepods_rel)
        return KubepodsRoot.at(self.cgroup2, self.kubepods_rel)

    def container(self, pod_uid: str | None = None, cid: str | None = None) -> Path:
        pod = self.cgroup2 / self.kubepods_rel / "besteffort" / f"pod{pod_uid or uuid.uuid4()}"
        return self.mkdir(pod / (cid or uuid.uuid4().hex * 2))

    def outside(self) -> Path:
        return self.mkdir(self.cgroup2 / self.name / "outside")

    def rel(self, directory: Path) -> str:
        return str(directory.relative_to(self.cgroup2))

    def close(self) -> None:
        for directory in sorted(self.made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                kill_and_remove(directory)
        self.made.clear()

    def __enter__(self) -> Hierarchy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def cgroup_id(directory: Path) -> int:
    return directory.stat().st_ino


# -- processes --------------------------------------------------------------


def rss_kib(pid: int | str = "self") -> int:
    return _status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int | str = "self") -> int:
    return _status_kib(pid, "VmHWM:")


def _status_kib(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_percent(pid: int, seconds: float) -> float:
    """A process's CPU use over the next `seconds`, in % of one CPU."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / (time.monotonic() - t0)


# -- statistics -------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "n": len(ordered)}  # fmt: skip


def mib(n_bytes: float) -> float:
    return n_bytes / (1 << 20)


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """with timed() as t: ... ; t[0] is the elapsed seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)
