"""What only the ftrace backend does: losses counted honestly against the bcc
backend's exact count of the same process, and its instance housekeeping."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kernel_support import Collector, Hierarchy, cgroup_id, run_helper, start_backend

from podtrace_agent.backend import ExecEvent, ExitEvent, KubepodsRoot
from podtrace_agent.ftrace.backend import FtraceBackend
from podtrace_agent.ftrace.tracefs import Instance, find_tracefs, instances
from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

N = 200_000


def blocked_in(pid: int, syscall: str) -> bool:
    """Whether `pid` sleeps in `syscall` (/proc/<pid>/syscall starts with its number)."""
    text = Path(f"/proc/{pid}/syscall").read_text().split()
    return bool(text) and text[0] == str(number_of(syscall))


def settled_counts(backend: FtraceBackend, cid: int) -> dict[int, int]:
    """The counts once the reader has read everything (two equal snapshots)."""
    previous: dict[int, int] | None = None
    while True:
        current = backend.syscall_counts().get(cid, {})
        if current == previous:
            return current
        previous = current
        time.sleep(0.5)


def test_losses_are_counted_honestly(
    bcc_collector: Collector, kubepods: KubepodsRoot, hierarchy: Hierarchy,
    helper: Path, tmp_path: Path,
) -> None:
    """A small buffer and a tight getppid loop: ftrace loses events, and what it
    read plus what it reports lost adds up to what bcc counted exactly."""
    ftrace = start_backend("ftrace", kubepods, buffer_size_kb=16)
    assert isinstance(ftrace, FtraceBackend)
    try:
        container = hierarchy.container()
        cid = cgroup_id(container)
        mask = Probe.SYSCALLS | Probe.EXEC | Probe.EXIT
        run = run_helper(helper, container, N, wait_for_go=True, tmp_path=tmp_path)
        # Wait until the helper sleeps opening its fifo: its close() and openat()
        # since joining are then counted by bcc, never by ftrace, and nothing else.
        while not blocked_in(run.pid, "openat"):
            time.sleep(0.01)
        ftrace.trace(cid, hierarchy.rel(container), mask)
        assert run.pid in ftrace.pid_filter(cid)
        lost_before = ftrace.stats().events_dropped
        run.release()
        assert run.wait() == 0
        bcc_collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.pid == run.pid)

        exact = bcc_collector.backend.syscall_counts()[cid]
        read = settled_counts(ftrace, cid)
        process_events = [
            e for e in ftrace.poll(0) if isinstance(e, ExecEvent | ExitEvent) and e.pid == run.pid
        ]
        lost = ftrace.stats().events_dropped - lost_before

        figures = f"bcc {sum(exact.values())}, ftrace read {sum(read.values())} + " \
            f"{len(process_events)} process events, lost {lost}"
        print(figures)
        assert exact[number_of("getppid")] == N
        assert lost > 0, figures
        # bcc's total less its 2 pre-trace syscalls, plus exec and exit lines.
        assert sum(read.values()) + len(process_events) + lost == sum(exact.values()), figures
    finally:
        ftrace.close()


def test_stale_instances_are_removed_and_close_cleans_up(kubepods: KubepodsRoot) -> None:
    tracefs = find_tracefs()
    dead_owner = Instance(tracefs, "podtrace-999999999-1")
    live_owner = Instance(tracefs, f"podtrace-{os.getppid()}-1")
    dead_owner.create()
    live_owner.create()
    try:
        backend = start_backend("ftrace", kubepods)
        assert isinstance(backend, FtraceBackend)
        ours = backend.instance_prefix
        names = {i.name for i in instances(tracefs, "podtrace-")}
        assert dead_owner.name not in names
        assert live_owner.name in names
        assert f"{ours}watch" in names
        backend.close()
        assert [i.name for i in instances(tracefs, ours)] == []
    finally:
        dead_owner.remove()
        live_owner.remove()
