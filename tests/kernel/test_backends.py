"""Both backends on the real kernel, with exact counts.

Each test runs for bcc and for ftrace (the `collector` fixture). The helper
joins a container cgroup itself, makes exactly N getppid calls and execs
/bin/true, so inside the cgroup getppid is called N times and execve once.

ftrace can only add a task to its pid filter after the task has joined the
cgroup, so for ftrace the helper waits on a fifo (like runc init waits for
`runc start`) until the backend shows the pid in its filter; bcc needs no
waiting: the kernel filters by cgroup, and a cgroup created after start is in
the traced map from its cgroup_mkdir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kernel_support import (
    ALL_PROBES,
    Collector,
    Hierarchy,
    cgroup_id,
    run_helper,
    wait_noticed,
)

from podtrace_agent.backend import BackendError, CgroupEvent, ExecEvent, ExitEvent
from podtrace_api.syscalls import number_of

N = 10_000
GETPPID = number_of("getppid")
EXECVE = number_of("execve")


def is_bcc(collector: Collector) -> bool:
    return collector.backend.name == "bcc"


def run_to_exit(
    collector: Collector, helper: Path, container: Path, tmp_path: Path, n: int = N,
    program: tuple[str, ...] = ("/bin/true",),
) -> tuple[int, ExitEvent]:
    """Run the helper in `container` and wait for its exit event: every event
    and count of the run is in by then (ftrace merges CPUs in time order)."""
    cid = cgroup_id(container)
    run = run_helper(helper, container, n, program, wait_for_go=True, tmp_path=tmp_path)
    wait_noticed(collector, cid, run.pid)
    run.release()
    run.wait()
    exit_event = collector.wait_for(
        lambda e: isinstance(e, ExitEvent) and e.pid == run.pid and e.cgroup_id == cid
    )
    assert isinstance(exit_event, ExitEvent)
    return run.pid, exit_event


def test_getppid_counted_exactly_and_exec_reported(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()
    cid = cgroup_id(container)
    collector.backend.trace(cid, hierarchy.rel(container), ALL_PROBES)

    pid, exit_event = run_to_exit(collector, helper, container, tmp_path)

    counts = collector.backend.syscall_counts()[cid]
    assert counts[GETPPID] == N
    assert counts[EXECVE] == 1
    execs = [e for e in collector.about(cid) if isinstance(e, ExecEvent)]
    assert [(e.pid, e.filename, e.comm) for e in execs] == [(pid, "/bin/true", "true")]
    assert execs[0].ppid == os.getpid()
    assert execs[0].uid == 0
    assert (exit_event.comm, exit_event.exit_code, exit_event.ppid) == ("true", 0, os.getpid())


def test_exit_code_is_the_wait_status(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()
    collector.backend.trace(cgroup_id(container), hierarchy.rel(container), ALL_PROBES)

    _, exit_event = run_to_exit(collector, helper, container, tmp_path, 0, ("/bin/false",))

    assert exit_event.exit_code == 1 << 8


def test_container_created_after_start_is_traced_from_first_exec(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()  # after the backend started; no trace() call
    cid = cgroup_id(container)
    bcc = is_bcc(collector)

    run = run_helper(helper, container, N, wait_for_go=not bcc, tmp_path=tmp_path)
    if not bcc:
        mkdir = collector.wait_for(lambda e: isinstance(e, CgroupEvent) and e.cgroup_id == cid)
        assert isinstance(mkdir, CgroupEvent) and mkdir.traced
        wait_noticed(collector, cid, run.pid)
        run.release()
    run.wait()
    collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.pid == run.pid)

    counts = collector.backend.syscall_counts()[cid]
    assert (counts[GETPPID], counts[EXECVE]) == (N, 1)
    mkdir = next(e for e in collector.about(cid) if isinstance(e, CgroupEvent))
    assert (mkdir.kind, mkdir.path, mkdir.level, mkdir.traced) == (
        "mkdir", hierarchy.rel(container), len(Path(hierarchy.rel(container)).parts), True
    )
    pod = next(e for e in collector.events if e.cgroup_id == cgroup_id(container.parent))
    assert isinstance(pod, CgroupEvent) and not pod.traced
    execs = [e for e in collector.about(cid) if isinstance(e, ExecEvent)]
    assert [(e.pid, e.filename) for e in execs] == [(run.pid, "/bin/true")]


def test_processes_outside_kubepods_produce_nothing(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    outside = hierarchy.outside()
    oid = cgroup_id(outside)
    with pytest.raises(BackendError):
        collector.backend.trace(oid, hierarchy.rel(outside), ALL_PROBES)
    stray = run_helper(helper, outside, N, wait_for_go=False, tmp_path=tmp_path)
    oid_or_pid = {oid, stray.pid}
    stray.wait()
    # A traced run after it: once its exit is in, anything of the stray run would be too.
    run_to_exit(collector, helper, hierarchy.container(), tmp_path, 1)

    assert collector.backend.syscall_counts().get(oid, {}) == {}
    strays = [e for e in collector.events if {e.cgroup_id, getattr(e, "pid", 0)} & oid_or_pid]
    assert strays == []


def test_rmdir_is_reported_and_final_counts_kept_once(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    container = hierarchy.container()
    cid = cgroup_id(container)
    collector.backend.trace(cid, hierarchy.rel(container), ALL_PROBES)
    run_to_exit(collector, helper, container, tmp_path, 7)

    hierarchy.remove(container)
    rmdir = collector.wait_for(
        lambda e: isinstance(e, CgroupEvent) and e.kind == "rmdir" and e.cgroup_id == cid
    )

    assert isinstance(rmdir, CgroupEvent) and rmdir.path == hierarchy.rel(container)
    assert collector.backend.syscall_counts()[cid][GETPPID] == 7
    assert cid not in collector.backend.syscall_counts()  # untraced: its row is free again


def test_stats_are_readable(collector: Collector) -> None:
    stats = collector.backend.stats()
    assert stats.events_seen > 0
    assert stats.events_dropped >= 0
    assert all(0 <= m.used <= m.capacity for m in stats.maps)
