"""Issue 11 part 1 on the real kernel: a bcc backend with pinned maps and links
is killed with SIGKILL while a container makes syscalls and, with no agent
running, execs; the next backend of the same layout resumes: the exact
syscall count and the exec made meanwhile are there. A backend of another
layout (other knobs) never reads those pins: it says what it removed and
starts from zero. Pins go when asked (uninstall).

The first backend runs in a child process (`python -c`), so that SIGKILL
leaves exactly what a killed agent leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_support import ALL_PROBES, WAIT_S, Hierarchy, cgroup_id, require_bcc, run_helper

from podtrace_agent.backend import BackendOptions, ExecEvent, KubepodsRoot
from podtrace_agent.bpf import pins
from podtrace_agent.bpf.loader import BccBackend
from podtrace_api.syscalls import number_of

GETPPID = number_of("getppid")
N = 3_000_000  # ~1 s of getppid: the kill lands in the middle

CHILD = """
import json, sys, time
from pathlib import Path
from podtrace_agent.backend import BackendOptions, KubepodsRoot
from podtrace_agent.bpf.loader import BccBackend
from podtrace_api.nodeconfig import Probe
args = json.loads(sys.argv[1])
root = KubepodsRoot(Path(args["cgroup2"]), args["path"], args["id"], args["level"])
backend = BccBackend(root, BackendOptions(auto_trace_mask=Probe(args["auto"]),
                                          max_traced=args["max_traced"]),
                     pin_dir=Path(args["pin_dir"]))
backend.start()
for cid, rel in args["trace"]:
    backend.trace(cid, rel, Probe(args["mask"]))
print(json.dumps({"layout": backend.resume.layout}), flush=True)
while True:
    backend.poll(0.1)
"""


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    require_bcc()
    path = pins.PIN_ROOT / f"test-{uuid.uuid4().hex[:8]}"
    yield path
    pins.remove_tree(path)


def start_child(kubepods: KubepodsRoot, pin_dir: Path, trace: list[tuple[int, str]],
                max_traced: int = 512) -> tuple[subprocess.Popen[str], str]:
    args = {"cgroup2": str(kubepods.cgroup2), "path": kubepods.path, "id": kubepods.cgroup_id,
            "level": kubepods.level, "auto": int(ALL_PROBES), "max_traced": max_traced,
            "pin_dir": str(pin_dir), "trace": trace, "mask": int(ALL_PROBES)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"the child backend did not start: {child.wait()}"
    return child, json.loads(line)["layout"]


def sigkill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=WAIT_S) == -signal.SIGKILL
    if child.stdout is not None:
        child.stdout.close()


def resumed_backend(kubepods: KubepodsRoot, pin_dir: Path, max_traced: int = 512) -> BccBackend:
    backend = BccBackend(kubepods, BackendOptions(auto_trace_mask=ALL_PROBES,
                                                  max_traced=max_traced), pin_dir=pin_dir)
    backend.start()
    return backend


def test_sigkill_and_restart_lose_no_count(
    kubepods: KubepodsRoot, hierarchy: Hierarchy, helper: Path, tmp_path: Path, pin_dir: Path
) -> None:
    container = hierarchy.container()
    cid, rel = cgroup_id(container), hierarchy.rel(container)
    child, layout = start_child(kubepods, pin_dir, [(cid, rel)])
    backend = None
    try:
        run = run_helper(helper, container, N, ("/bin/true",), wait_for_go=True,
                         tmp_path=tmp_path)
        run.release()
        time.sleep(0.3)
        assert run.process.poll() is None, "the workload ended before the kill"
        sigkill(child)  # mid-workload
        assert run.wait() == 0  # it went on, and exec'd /bin/true with no agent running
        assert sorted(p.name for p in pins.links(pin_dir / layout).values())  # still attached
        backend = resumed_backend(kubepods, pin_dir)
        resume = backend.resume
        assert (resume.layout, resume.found, resume.adopted) == (layout, True, True)
        assert resume.starts == 2 and resume.stale == []
        backend.trace(cid, rel, ALL_PROBES)  # the agent finds its container again
        counted = backend.syscall_counts()[cid].get(GETPPID, 0)
        deadline = time.monotonic() + WAIT_S
        execs: list[ExecEvent] = []
        while not execs and time.monotonic() < deadline:
            execs = [e for e in backend.poll(0.1) if isinstance(e, ExecEvent)
                     and e.pid == run.pid and e.filename == "/bin/true"]
        dropped = backend.stats().events_dropped
        print(f"\nkill -9 mid-workload: getppid counted {counted} of {N} "
              f"(lost over the restart: {N - counted}); the exec made with no agent running "
              f"read after it: {len(execs)}; ring buffer drops: {dropped}; "
              f"orphaned rows freed: {resume.orphaned_rows}")
        assert counted == N
        assert len(execs) == 1
        assert dropped == 0
    finally:
        if child.poll() is None:
            sigkill(child)
        if backend is not None:
            backend.unpin()
            backend.close()
    assert not pin_dir.exists()


def test_another_layout_is_not_read(
    kubepods: KubepodsRoot, hierarchy: Hierarchy, helper: Path, tmp_path: Path, pin_dir: Path
) -> None:
    container = hierarchy.container()
    cid, rel = cgroup_id(container), hierarchy.rel(container)
    child, old_layout = start_child(kubepods, pin_dir, [(cid, rel)], max_traced=64)
    try:
        run = run_helper(helper, container, 1000, (), wait_for_go=True, tmp_path=tmp_path)
        run.release()
        assert run.wait() == 0
    finally:
        sigkill(child)
    backend = resumed_backend(kubepods, pin_dir)  # 512 rows: another layout
    try:
        resume = backend.resume
        assert resume.layout != old_layout and not resume.found
        assert resume.stale == [f"pins of another program layout ({old_layout}, 1 traced "
                                "cgroups) removed: what they counted since the last report "
                                "is lost"]
        assert not (pin_dir / old_layout).exists()
        backend.trace(cid, rel, ALL_PROBES)
        assert backend.syscall_counts()[cid] == {}  # from zero, not the old rows
        print(f"\n{resume.stale[0]}")
    finally:
        backend.unpin()
        backend.close()
    assert not pin_dir.exists()
