"""The workload marker on the real kernel, both backends: runc init's
prctl(PR_GET_PDEATHSIG) (comm `runc:[2:INIT]`) snapshots the cgroup's counts, so
what came before it (the runtime's set-up) is told apart from the workload.

marker_helper.c stands in for runc's init: N getppid calls (set-up), the marker
under the comm given, M gettid calls (workload), then an exec or exit. What the
marker says is checked exactly: getppid N times before it, none after; gettid
only after.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kernel_support import ALL_PROBES, Collector, Hierarchy, cgroup_id, wait_noticed

from harness.prereq import need_binary
from podtrace_agent.backend import RUNC_MARKER, CgroupEvent, ExitEvent
from podtrace_api.syscalls import number_of

N, M = 3000, 700
GETPPID, GETTID, PRCTL = number_of("getppid"), number_of("gettid"), number_of("prctl")
SOURCE = Path(__file__).with_name("marker_helper.c")


@pytest.fixture(scope="session")
def marker_helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need_binary("cc", "apt-get install gcc")
    out = tmp_path_factory.mktemp("marker") / "marker_helper"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(out), str(SOURCE)], check=True)
    return out


def run(collector: Collector, helper: Path, container: Path, tmp_path: Path, comm: str,
        program: tuple[str, ...] = ()) -> int:  # fmt: skip
    """Run the helper in `container` once the backend sees it; its pid after its exit."""
    cid = cgroup_id(container)
    fifo = tmp_path / f"go-{uuid.uuid4().hex[:8]}"
    os.mkfifo(fifo)
    proc = subprocess.Popen([str(helper), str(container / "cgroup.procs"), str(fifo), comm,
                             str(N), str(M), *program])  # fmt: skip
    wait_until_joined(container, proc)
    wait_noticed(collector, cid, proc.pid)
    with fifo.open("w") as go:
        go.write("g")
    assert proc.wait(timeout=60) == 0
    collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.pid == proc.pid)
    return proc.pid


def wait_until_joined(container: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while str(proc.pid) not in (container / "cgroup.procs").read_text().split():
        assert proc.poll() is None and time.monotonic() < deadline, "helper did not join"
        time.sleep(0.01)


def workload(counts: dict[int, int], marker: dict[int, int]) -> set[int]:
    return {n for n, c in counts.items() if c > marker.get(n, 0)}


def test_marker_splits_set_up_from_workload(
    collector: Collector, hierarchy: Hierarchy, marker_helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()
    cid = cgroup_id(container)
    collector.backend.trace(cid, hierarchy.rel(container), ALL_PROBES)

    run(collector, marker_helper, container, tmp_path, RUNC_MARKER.comm)

    counts = collector.backend.syscall_counts()[cid]
    marker = collector.backend.markers()[cid]
    assert (counts[GETPPID], counts[GETTID]) == (N, M)
    assert marker[GETPPID] == N and GETTID not in marker
    assert counts[PRCTL] == marker[PRCTL] + 1  # the marker itself is the workload's
    assert {GETTID, PRCTL} <= workload(counts, marker) and GETPPID not in workload(counts, marker)


def test_the_same_call_under_another_name_is_no_marker(
    collector: Collector, hierarchy: Hierarchy, marker_helper: Path, tmp_path: Path
) -> None:
    # Traced as a running container is (not since its mkdir): ftrace then goes by the
    # comm alone, as bcc always does.
    container = hierarchy.container()
    cid = cgroup_id(container)
    collector.backend.untrace(cid)
    collector.backend.trace(cid, hierarchy.rel(container), ALL_PROBES)

    run(collector, marker_helper, container, tmp_path, "app")

    assert collector.backend.syscall_counts()[cid][GETTID] == M
    assert cid not in collector.backend.markers()


def test_marker_of_a_container_traced_from_its_mkdir_that_execs_at_once(
    collector: Collector, hierarchy: Hierarchy, marker_helper: Path, tmp_path: Path
) -> None:
    # As with runc: the init execs the workload right after the marker, so ftrace's
    # trace_pipe may print the workload's comm on the marker's line by the time it is read.
    container = hierarchy.container()  # auto-traced by the backend
    cid = cgroup_id(container)
    mkdir = collector.wait_for(lambda e: isinstance(e, CgroupEvent) and e.cgroup_id == cid)
    assert isinstance(mkdir, CgroupEvent) and mkdir.traced

    run(collector, marker_helper, container, tmp_path, RUNC_MARKER.comm, ("/bin/true",))

    counts = collector.backend.syscall_counts()[cid]
    marker = collector.backend.markers()[cid]
    assert marker[GETPPID] == N and counts[GETTID] == M
    assert GETPPID not in workload(counts, marker)
    assert {GETTID, number_of("execve"), number_of("exit_group")} <= workload(counts, marker)
