"""Container churn in a real cgroup2 hierarchy, as a busy node's kubelet and
runtime make it: pods and containers created and removed in batches under a
private kubepods, some containers with a sub-cgroup (crun's `container`), some
running a process (`/bin/true`, exec'd inside the container cgroup).

Shared by the kernel tier (tests/kernel/test_churn.py: the agent's state is
empty afterwards) and bench/churn.py (RSS and containers per second).

    with ChurnRoot(cgroup2) as root:          # <cgroup2>/podtrace-churn-<hex>/kubepods
        made = churn(root, containers=2000)   # a ChurnResult
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from podtrace_agent.fsretry import rmdir_retrying

RMDIR_WAIT_S = 10.0
SUBGROUP = "container"  # crun's sub-cgroup name


@dataclass
class ChurnRoot:
    """A private kubepods (`<cgroup2>/podtrace-churn-<hex>/kubepods/besteffort`),
    removed with everything left in it on exit."""

    cgroup2: Path
    name: str = field(default_factory=lambda: f"podtrace-churn-{uuid.uuid4().hex[:8]}")

    @property
    def top(self) -> Path:
        return self.cgroup2 / self.name

    @property
    def kubepods(self) -> str:
        """kubepods relative to the cgroup2 mount."""
        return f"{self.name}/kubepods"

    @property
    def qos(self) -> Path:
        return self.top / "kubepods" / "besteffort"

    def __enter__(self) -> Self:
        self.qos.mkdir(parents=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for directory in sorted((p for p in self.top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            rmdir(directory)
        rmdir(self.top)


@dataclass(frozen=True)
class ChurnResult:
    containers: int  # container cgroups created and removed
    subgroups: int  # of them with a sub-cgroup
    execs: int  # of them that ran /bin/true
    seconds: float


def rmdir(directory: Path) -> None:
    """rmdir, retried while the kernel finishes offlining a child or a process leaves."""
    rmdir_retrying(directory, timeout=RMDIR_WAIT_S, interval=0.005)


def run_in(cgroup: Path, program: str = "/bin/true") -> None:
    """A shell that moves itself into `cgroup` and execs `program` there."""
    procs = cgroup / "cgroup.procs"
    subprocess.run(["/bin/sh", "-c", f'echo $$ > "{procs}" && exec {program}'], check=True)


def churn(
    root: ChurnRoot,
    containers: int,
    *,
    batch: int = 50,
    subgroup_every: int = 10,
    exec_every: int = 50,
    rate: float | None = None,
) -> ChurnResult:
    """Create and remove `containers` container cgroups, `batch` pods at a time
    (one container each); every `subgroup_every`th container gets a sub-cgroup,
    every `exec_every`th runs a process (in its sub-cgroup when it has one).
    `rate`: at most that many containers per second (None: as fast as it goes)."""
    start = time.monotonic()
    subgroups = execs = made = 0
    while made < containers:
        if rate is not None and (ahead := made / rate - (time.monotonic() - start)) > 0:
            time.sleep(ahead)
        pods: list[tuple[Path, list[Path]]] = []
        for _ in range(min(batch, containers - made)):
            pod = root.qos / f"pod{uuid.uuid4()}"
            container = pod / (uuid.uuid4().hex * 2)
            container.mkdir(parents=True)
            dirs = [container]
            if made % subgroup_every == 0:
                (container / SUBGROUP).mkdir()
                dirs.append(container / SUBGROUP)
                subgroups += 1
            if made % exec_every == 0:
                run_in(dirs[-1])
                execs += 1
            pods.append((pod, dirs))
            made += 1
        for pod, dirs in pods:
            for directory in reversed(dirs):
                rmdir(directory)
            rmdir(pod)
    return ChurnResult(made, subgroups, execs, time.monotonic() - start)
