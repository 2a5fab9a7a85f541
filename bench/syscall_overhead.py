"""What tracing adds to one syscall (getppid), side by side with the floor any
eBPF syscall hook pays, bpftrace and strace, in one run. Not a test: it
prints, it does not pass or fail (issue 12 parts 1-3).

The loop (getppid_loop.c) times itself in thread CPU time. Every tracer is set
up once and switched on and off, so that all scenarios run interleaved, round
after round (the machine's noise then hits each alike); each is reported by
its minimum (the least disturbed run) and median over the rounds, as ns added
to "no tracer" and as a ratio to the floor's added ns of the same run:

  no tracer        nothing attached
  floor            an empty BCC RAW_TRACEPOINT_PROBE(sys_enter) of our own: what any
                   eBPF syscall hook costs (bpftrace's rawtracepoint probes abort here)
  bcc outside      podtrace's bcc backend; the process outside kubepods
  bcc untraced     the same; the process in a kubepods container nobody traces
  bcc traced       the same; the process in a traced container (syscalls + exec)
  ftrace untraced  podtrace's ftrace backend tracing that container; process outside
  ftrace traced    the process in it (every syscall written to the instance's ring
                   buffer, read back by the backend's reader; its losses reported)
  bpftrace ...     bpftrace's equivalent, `tracepoint:raw_syscalls:sys_enter
                   /cgroup == X/ { @[args->id] = count(); }`, outside and in X
  strace -f -c     the loop under strace (ptrace stops: wall clock, the thread's
                   CPU time does not see the tracer's work)
  2 threads ...    two threads of one process on two CPUs (no tracer, floor, and in
                   the traced container: contention on its counters)

The BPF maps of the loaded bcc backend are reported as the kernel accounts them
(fdinfo memlock, = `bpftool map show`) and computed for 64 and 128 CPUs.

Run as root:  PYTHONPATH=tests .venv/bin/python bench/syscall_overhead.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import bpf_memory
from common import Hierarchy, build, cgroup_id, need_root

from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

TRACED_MASK = Probe.SYSCALLS | Probe.EXEC
FLOOR_PROGRAM = "RAW_TRACEPOINT_PROBE(sys_enter) { return 0; }"
GETPPID = number_of("getppid")
BPFTRACE_PROGRAM = "tracepoint:raw_syscalls:sys_enter /cgroup == %d/ { @[args->id] = count(); }"


class Switch(Protocol):
    def set(self, on: bool) -> None: ...


class Runner:
    """A shell that lives in `cgroup` and runs the loop as its child: ftrace has
    it in its pid filter already, and event-fork adds each loop at fork, so no
    loop runs before ftrace traces it."""

    def __init__(self, binary: Path, cgroup: Path) -> None:
        script = (f"echo $$ > {cgroup}/cgroup.procs; "
                  f"while read n t; do {binary} - $n $t; done")  # fmt: skip
        self.process = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip

    def run(self, calls: int, threads: int = 1) -> tuple[float, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{calls} {threads}\n")
        self.process.stdin.flush()
        cpu, wall = self.process.stdout.readline().split()
        return float(cpu), float(wall)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


class Floor:
    """The empty raw-tracepoint program, loaded once, attached on demand."""

    def __init__(self) -> None:
        from bcc import BPF

        self.bpf = BPF(text=FLOOR_PROGRAM)  # attaches at load
        self.on = True

    def set(self, on: bool) -> None:
        if on != self.on:
            if on:
                self.bpf.attach_raw_tracepoint(tp=b"sys_enter",
                                               fn_name=b"raw_tracepoint__sys_enter")
            else:
                self.bpf.detach_raw_tracepoint(b"sys_enter")
            self.on = on

    def close(self) -> None:
        self.bpf.cleanup()


class BackendSwitch:
    """A started backend's syscall hook switched off and on. Reaches into the
    backends: this is a bench, not agent code."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.on = True

    def set(self, on: bool) -> None:
        from podtrace_agent.bpf.loader import BccBackend

        if on == self.on:
            return
        self.on = on
        if isinstance(self.backend, BccBackend):
            bpf = self.backend._bpf
            raw = b"raw_tracepoint__sys_enter" in bpf.funcs
            if on and raw:
                bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"raw_tracepoint__sys_enter")
            elif on:
                bpf.attach_tracepoint(tp=b"raw_syscalls:sys_enter",
                                      fn_name=b"tracepoint__raw_syscalls__sys_enter")  # fmt: skip
            elif raw:
                bpf.detach_raw_tracepoint(b"sys_enter")
            else:
                bpf.detach_tracepoint(b"raw_syscalls:sys_enter")
        else:
            for traced in self.backend._traced.values():
                traced.instance.set("events/raw_syscalls/sys_enter/enable", "1" if on else "0")


class Bpftrace:
    """bpftrace's equivalent of counting one cgroup's syscalls: started when switched
    on (it prints "Attaching" once attached), stopped with SIGINT when off."""

    def __init__(self, cgroup: int) -> None:
        self.program = BPFTRACE_PROGRAM % cgroup
        self.process: subprocess.Popen[str] | None = None
        self.counted: list[int] = []  # getppid calls of X it counted, per start

    def set(self, on: bool) -> None:
        if on and self.process is None:
            self.process = subprocess.Popen(["bpftrace", "-e", self.program], text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
            if "Attaching" not in line:
                raise RuntimeError(f"bpftrace did not start: {line}{self.process.stderr.read()}")
            time.sleep(1)  # let it settle: its first moments cost every syscall more
        elif not on and self.process is not None:
            self.process.send_signal(signal.SIGINT)
            out, _ = self.process.communicate(timeout=30)
            self.counted.append(sum(int(line.split()[-1]) for line in out.splitlines()
                                    if line.startswith(f"@[{GETPPID}]:")))  # fmt: skip
            self.process = None

    def close(self) -> None:
        self.set(False)


def other_tracers() -> list[str]:
    """Tracers of other processes that every syscall pays for too: ftrace instances
    with sys_enter enabled, BPF tracepoint programs held open by others."""
    found = []
    tracefs = Path("/sys/kernel/tracing")
    for enable in tracefs.glob("instances/*/events/raw_syscalls/sys_enter/enable"):
        with contextlib.suppress(OSError):
            if enable.read_text().strip() == "1":
                found.append(f"ftrace instance {enable.parents[3].name}")
    me = str(Path("/proc/self").resolve().name)
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        with contextlib.suppress(OSError):
            text = fdinfo.read_text()
            if fdinfo.parts[2] != me and ("prog_type:\t5\n" in text or "prog_type:\t17\n" in text):
                found.append(f"BPF tracepoint program of pid {fdinfo.parts[2]}")
    return sorted(set(found))


@contextlib.contextmanager
def closing_all(items: list[Any]) -> Iterator[list[Any]]:
    try:
        yield items
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                item.close()


def figures(samples: dict[str, list[tuple[float, float]]], base: str, floor: str,
            wall: set[str]) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per scenario: min/median ns, added ns over `base` and ratio to `floor`'s added
    ns (both by minimum and by median); `wall` scenarios use the wall clock."""
    def clock(label: str, which: int) -> list[float]:
        return [s[which] for s in samples[label]]

    out: dict[str, dict[str, float]] = {}
    for label in samples:
        which = 1 if label in wall else 0
        values, ref = clock(label, which), clock(base, which)
        low, mid = min(values), statistics.median(values)
        added_min, added_median = low - min(ref), mid - statistics.median(ref)
        out[label] = {"min_ns": low, "median_ns": mid, "added_ns": added_min,
                      "added_median_ns": added_median, "clock": "wall" if which else "cpu"}
    floor_min, floor_median = out[floor]["added_ns"], out[floor]["added_median_ns"]
    for row in out.values():
        row["floor_ratio"] = row["added_ns"] / floor_min if floor_min > 0 else float("nan")
        row["floor_ratio_median"] = (row["added_median_ns"] / floor_median
                                     if floor_median > 0 else float("nan"))  # fmt: skip
    return out


def measure(calls: int = 1_000_000, rounds: int = 9, strace_calls: int | None = None,
            ftrace: bool = True) -> dict[str, Any]:  # fmt: skip
    """Parts 1 and 3: the interleaved scenarios and the bcc backend's map memory."""
    from podtrace_agent.backend import BackendOptions
    from podtrace_agent.bpf.loader import BccBackend

    strace_calls = strace_calls or max(calls // 20, 1000)
    loop = build("getppid_loop")
    busy = other_tracers()
    samples: dict[str, list[tuple[float, float]]] = {}
    with Hierarchy() as h, closing_all([]) as owned:
        kubepods = h.kubepods()
        traced, untraced, outside = h.container(), h.container(), h.outside()
        floor = Floor()
        owned.append(floor)
        bcc = BccBackend(kubepods, BackendOptions())
        owned.append(bcc)
        bcc.start()
        bcc.trace(cgroup_id(traced), h.rel(traced), TRACED_MASK)
        memory = bpf_memory.of_backend(bcc)
        switches: dict[str, Switch] = {"floor": floor, "bcc": BackendSwitch(bcc)}
        ft = None
        if ftrace:
            from podtrace_agent.ftrace.backend import FtraceBackend

            ft = FtraceBackend(kubepods, BackendOptions())
            owned.append(ft)
            ft.start()
            ft.trace(cgroup_id(traced), h.rel(traced), TRACED_MASK)
            switches["ftrace"] = BackendSwitch(ft)
        bpftrace = Bpftrace(cgroup_id(traced))
        owned.append(bpftrace)
        switches["bpftrace"] = bpftrace
        in_traced, in_untraced, out = (Runner(loop, d) for d in (traced, untraced, outside))
        owned += [in_traced, in_untraced, out]
        time.sleep(1)  # ftrace: the runner's attach is seen, its pid in the filter

        def strace() -> tuple[float, float]:
            got = subprocess.run(["strace", "-f", "-c", "-o", "/dev/null", str(loop),
                                  str(outside / "cgroup.procs"), str(strace_calls)],
                                 check=True, capture_output=True, text=True)  # fmt: skip
            cpu, wall = got.stdout.split()
            return float(cpu), float(wall)

        scenarios: list[tuple[str, str | None, Callable[[], tuple[float, float]]]] = [
            ("no tracer", None, lambda: out.run(calls)),
            ("floor", "floor", lambda: out.run(calls)),
            ("bcc outside kubepods", "bcc", lambda: out.run(calls)),
            ("bcc untraced container", "bcc", lambda: in_untraced.run(calls)),
            ("bcc traced", "bcc", lambda: in_traced.run(calls)),
        ]
        if ft is not None:
            scenarios += [("ftrace untraced", "ftrace", lambda: out.run(calls)),
                          ("ftrace traced", "ftrace", lambda: in_traced.run(calls))]
        scenarios += [
            ("bpftrace untraced", "bpftrace", lambda: out.run(calls)),
            ("bpftrace traced", "bpftrace", lambda: in_traced.run(calls)),
            ("strace -f -c", None, strace),
            ("2 threads: no tracer", None, lambda: out.run(calls, 2)),
            ("2 threads: floor", "floor", lambda: out.run(calls, 2)),
            ("2 threads: bcc traced", "bcc", lambda: in_traced.run(calls, 2)),
        ]

        def only(active: str | None) -> None:
            for name, switch in switches.items():
                if name != active:
                    switch.set(False)
            if active:
                switches[active].set(True)

        before = bcc.syscall_counts().get(cgroup_id(traced), {}).get(GETPPID, 0)
        started = time.monotonic()
        for _ in range(rounds):
            for label, active, run in scenarios:
                only(active)
                samples.setdefault(label, []).append(run())
            bcc.poll(0)
        only(None)
        seconds = time.monotonic() - started
        counted = bcc.syscall_counts().get(cgroup_id(traced), {}).get(GETPPID, 0) - before
        ftrace_lost = ft.stats().events_dropped if ft is not None else None
        ftrace_made = calls * rounds if ft is not None else None

    singles = {k: v for k, v in samples.items() if not k.startswith("2 threads")}
    doubles = {k: v for k, v in samples.items() if k.startswith("2 threads")}
    rows = figures(singles, "no tracer", "floor", wall={"strace -f -c"})
    rows.update(figures(doubles, "2 threads: no tracer", "2 threads: floor", wall=set()))
    return {
        "calls": calls, "rounds": rounds, "strace_calls": strace_calls,
        "seconds": round(seconds, 1),
        "scenarios": rows,
        "bcc_counted_getppid": counted,
        # made while bcc's hook was on: "bcc traced" (1 thread) and its 2-thread run
        "bcc_made_getppid": rounds * calls * 3,
        "bpftrace_counted_getppid": sum(bpftrace.counted),
        "ftrace_lost": ftrace_lost, "ftrace_made": ftrace_made,
        "other_tracers": busy,
        "memory": memory,
    }  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    print(f"getppid, {result['calls']:,} calls per run ({result['strace_calls']:,} under strace), "
          f"{result['rounds']} interleaved rounds")
    print(f"{'scenario':<26}{'min ns':>9}{'median':>9}{'added':>9}{'x floor':>9}{'(median)':>9}")
    for label, row in result["scenarios"].items():
        mark = " (wall)" if row["clock"] == "wall" else ""
        print(f"{label:<26}{row['min_ns']:>9.1f}{row['median_ns']:>9.1f}{row['added_ns']:>+9.1f}"
              f"{row['floor_ratio']:>9.2f}{row['floor_ratio_median']:>9.2f}{mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-ftrace", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    need_root()
    if not shutil.which("bpftrace") or not shutil.which("strace"):
        raise SystemExit("needs bpftrace and strace (apt-get install bpftrace strace)")
    result = measure(args.calls, args.rounds, ftrace=not args.no_ftrace)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
        bpf_memory.print_table(result["memory"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
