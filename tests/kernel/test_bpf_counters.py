"""The bcc backend's counter layout on the real kernel (issue 12 part 3).

`counts` is one array shared by all CPUs (atomic adds), so its memory does not
grow with CPUs: the kernel's own accounting (fdinfo memlock) is read for every
map of the loaded program, checked against the layout, and projected to 64 and
128 CPUs. And shared counters stay exact when two threads of one container
count the same syscall on two CPUs at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_support import Hierarchy, cgroup_id, start_backend

from harness.prereq import missing, need_binary
from podtrace_agent.bpf.loader import BccBackend, possible_cpus
from podtrace_agent.bpf.memory import ARRAY, PERCPU_ARRAY, per_cpu_bytes, projected
from podtrace_agent.bpf.wire import C
from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

THREADS_C = Path(__file__).with_name("threads.c")
GETPPID = number_of("getppid")
MIB = 2**20
BUDGET_128_CPUS = 16 * MIB  # issue 12 part 3: 512 containers on 128 CPUs
# What the kernel adds to a map beyond its elements (struct bpf_array and the like).
HEADER_SLACK = 4096


@pytest.fixture(scope="module")
def backend(kubepods: object) -> Iterator[BccBackend]:
    b = start_backend("bcc", kubepods)  # type: ignore[arg-type]
    assert isinstance(b, BccBackend)
    yield b
    b.close()


@pytest.fixture(scope="module")
def threads_helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need_binary("cc", "apt-get install gcc")
    out = tmp_path_factory.mktemp("threads") / "threads"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-pthread", "-o", str(out), str(THREADS_C)],
                   check=True)
    return out


def test_map_memory_as_the_kernel_accounts_it(backend: BccBackend) -> None:
    maps = {m.name: m for m in backend.map_memory()}
    cpus = possible_cpus()
    rows = backend.options.max_traced * C["NR_SYSCALLS_MAX"]
    counts = maps["counts"]
    assert (counts.map_type, counts.value_size, counts.max_entries) == (ARRAY, 8, rows)
    # One copy for all CPUs: its elements and a header, nothing per CPU.
    assert rows * 8 <= counts.memlock <= rows * 8 + HEADER_SLACK, counts
    assert per_cpu_bytes(counts) == 0
    # The per-CPU maps left are what the layout says they are, as charged here.
    for m in maps.values():
        if m.map_type == PERCPU_ARRAY:
            assert per_cpu_bytes(m) * cpus <= m.memlock <= per_cpu_bytes(m) * cpus + HEADER_SLACK, m
    lines = [f"{'map':<16}{'type':>5}{'entries':>9}{'memlock':>12}{'per CPU':>10}"]
    lines += [f"{m.name:<16}{m.map_type:>5}{m.max_entries:>9}{m.memlock:>12}{per_cpu_bytes(m):>10}"
              for m in sorted(maps.values(), key=lambda m: -m.memlock)]
    totals = {n: projected(maps.values(), cpus, n) for n in (cpus, 64, 128)}
    lines += [f"all maps, {n} possible CPUs: {total / MIB:.2f} MiB" for n, total in totals.items()]
    print(f"\nBPF map memory (max_traced {backend.options.max_traced}, {cpus} possible CPUs "
          "here)\n" + "\n".join(lines))
    assert totals[128] <= BUDGET_128_CPUS, totals


def test_two_threads_on_two_cpus_count_exactly(
    backend: BccBackend, hierarchy: Hierarchy, threads_helper: Path
) -> None:
    if (os.cpu_count() or 1) < 2:
        missing("a second CPU (counter contention between CPUs)")
    n, threads = 500_000, 2
    container = hierarchy.container()
    cid = cgroup_id(container)
    backend.trace(cid, hierarchy.rel(container), Probe.SYSCALLS)
    try:
        subprocess.run([str(threads_helper), str(container / "cgroup.procs"), str(threads),
                        str(n)], check=True, timeout=120)
        counted = backend.syscall_counts()[cid].get(GETPPID, 0)
        print(f"\n{threads} threads on {threads} CPUs x {n} getppid: counted {counted}")
        assert counted == threads * n
    finally:
        backend.untrace(cid)
        hierarchy.remove(container)


# A process that makes getppid calls on command (one CPU: sys_enter's per-CPU cache).
_ON_COMMAND = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
for line in sys.stdin:
    for _ in range(int(line)):
        os.getppid()
    print("ok", flush=True)
"""


def test_a_container_traced_after_its_syscalls_were_seen_untraced_counts_at_once(
    backend: BccBackend, hierarchy: Hierarchy
) -> None:
    # sys_enter remembers per CPU that a task's cgroup is not traced (podtrace.c): an
    # insert into `traced` must end that memory before the next syscall.
    container = hierarchy.container()
    cid = cgroup_id(container)
    proc = subprocess.Popen([sys.executable, "-c", _ON_COMMAND], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    def run(n: int) -> None:
        proc.stdin.write(f"{n}\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.stdout.readline() == "ok\n"  # type: ignore[union-attr]

    try:
        (container / "cgroup.procs").write_text(str(proc.pid))
        backend.untrace(cid)  # traced since its mkdir (auto): not any more
        for round_ in range(3):
            run(10_000)  # seen untraced, remembered
            backend.syscall_counts()  # takes the last counts of the untraced row
            backend.trace(cid, hierarchy.rel(container), Probe.SYSCALLS)
            run(1_000)
            counted = backend.syscall_counts().get(cid, {}).get(GETPPID, 0)
            assert counted == 1_000, f"round {round_}: {counted} of 1000 counted"
            backend.untrace(cid)
            run(10_000)
    finally:
        proc.kill()
        proc.communicate()  # and closes its pipes
        hierarchy.remove(container)
