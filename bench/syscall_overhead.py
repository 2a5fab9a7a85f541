"""A first rough figure of what tracing adds to one syscall (getppid), on this
machine, in one run. Not a test: it prints, it does not pass or fail.

The loop times itself in thread CPU time (getppid_loop.c). Both backends are
started once; their syscall hook is switched on and off so that the scenarios
run interleaved, ROUNDS times, reported as the minimum (the least disturbed
run) and the median:
  baseline        nothing attached
  bcc untraced    the bcc backend loaded; the process outside kubepods
                  (pays the raw_syscalls:sys_enter program up to the ancestor check)
  bcc traced      the bcc backend loaded; the process in a traced container
                  (ancestor check, one hash lookup, one per-CPU counter)
  ftrace untraced an ftrace instance tracing another cgroup (sys_enter enabled)
  ftrace traced   the process in that cgroup: every syscall is written to the
                  instance's ring buffer and read back as text by the agent

Run as root:  .venv/bin/python bench/syscall_overhead.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from podtrace_agent.backend import Backend, BackendOptions, KubepodsRoot
from podtrace_api.nodeconfig import Probe

LOOP_C = Path(__file__).with_name("getppid_loop.c")


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    sys.exit("no cgroup2 mount")


@contextlib.contextmanager
def hierarchy(cgroup2: Path) -> Iterator[tuple[KubepodsRoot, Path, Path]]:
    """A private kubepods with one container, and a cgroup outside it."""
    name = f"podtrace-bench-{uuid.uuid4().hex[:8]}"
    container = cgroup2 / name / "besteffort" / f"pod{uuid.uuid4()}" / ("b" * 64)
    outside = cgroup2 / f"{name}-outside"
    made = [*reversed(container.relative_to(cgroup2).parents[:-1]), container.relative_to(cgroup2)]
    for rel in made:
        (cgroup2 / rel).mkdir()
    outside.mkdir()
    try:
        yield KubepodsRoot.at(cgroup2, name), container, outside
    finally:
        for directory in [outside, *(cgroup2 / rel for rel in reversed(made))]:
            with contextlib.suppress(OSError):
                directory.rmdir()


def run_loop(binary: Path, cgroup: Path, calls: int) -> float:
    out = subprocess.run(
        [str(binary), str(cgroup / "cgroup.procs"), str(calls)],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout)


class Runner:
    """A shell that lives in `cgroup` and runs the loop as its child: ftrace
    has it in its pid filter already, and event-fork adds each loop at fork,
    so no loop runs before ftrace traces it."""

    def __init__(self, binary: Path, cgroup: Path) -> None:
        script = f"echo $$ > {cgroup}/cgroup.procs; while read n; do {binary} - $n; done"
        self.process = subprocess.Popen(
            ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, calls: int) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{calls}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def other_tracers() -> list[str]:
    """Tracers of other processes that every syscall pays for too: ftrace
    instances with sys_enter enabled, BPF tracepoint programs held open."""
    found = []
    tracefs = Path("/sys/kernel/tracing")
    for enable in tracefs.glob("instances/*/events/raw_syscalls/sys_enter/enable"):
        if enable.read_text().strip() == "1":
            found.append(f"ftrace instance {enable.parents[3].name}")
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        with contextlib.suppress(OSError):
            if "prog_type:\t5\n" in fdinfo.read_text():  # BPF_PROG_TYPE_TRACEPOINT
                found.append(f"BPF tracepoint program of pid {fdinfo.parts[2]}")
    return sorted(set(found))


class Toggle:
    """Switch a started backend's syscall hook off and on, so that all scenarios
    can be interleaved round by round (the machine's noise then hits each alike).
    Reaches into the backends: this is a bench, not agent code."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.on = True

    def set(self, on: bool) -> None:
        from podtrace_agent.bpf.loader import BccBackend
        from podtrace_agent.ftrace.backend import FtraceBackend

        if on == self.on:
            return
        self.on = on
        if isinstance(self.backend, BccBackend):
            bpf = self.backend._bpf
            raw = b"raw_tracepoint__sys_enter" in bpf.funcs
            if on and raw:
                bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"raw_tracepoint__sys_enter")
            elif on:
                bpf.attach_tracepoint(
                    tp=b"raw_syscalls:sys_enter", fn_name=b"tracepoint__raw_syscalls__sys_enter"
                )
            elif raw:
                bpf.detach_raw_tracepoint(b"sys_enter")
            else:
                bpf.detach_tracepoint(b"raw_syscalls:sys_enter")
        elif isinstance(self.backend, FtraceBackend):
            for traced in self.backend._traced.values():
                traced.instance.set("events/raw_syscalls/sys_enter/enable", "1" if on else "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-ftrace", action="store_true")
    parser.add_argument(
        "--classic", action="store_true",
        help="also the bcc program on the classic raw_syscalls:sys_enter tracepoint",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="podtrace-bench-"))
    binary = tmp / "getppid_loop"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(LOOP_C)], check=True)
    cgroup2 = cgroup2_mount()
    busy = other_tracers()
    samples: dict[str, list[float]] = {}
    dropped = 0
    with hierarchy(cgroup2) as (kubepods, container, outside):
        cid, rel = container.stat().st_ino, str(container.relative_to(cgroup2))
        from podtrace_agent.bpf.loader import BccBackend

        backends: dict[str, Backend] = {"bcc": BccBackend(kubepods, BackendOptions())}
        if args.classic:
            backends["bcc classic"] = BccBackend(kubepods, BackendOptions(), use_btf=False)
        if not args.no_ftrace:
            from podtrace_agent.ftrace.backend import FtraceBackend

            backends["ftrace"] = FtraceBackend(kubepods, BackendOptions())
        runner = None
        try:
            for backend in backends.values():
                backend.start()
                backend.trace(cid, rel, Probe.SYSCALLS)
            runner = Runner(binary, container)
            time.sleep(1)  # ftrace: the runner's attach is seen, its pid in the filter
            toggles = {name: Toggle(b) for name, b in backends.items()}

            def only(active: str | None) -> None:
                for toggle in toggles.values():
                    toggle.set(False)
                if active:
                    toggles[active].set(True)

            def outside_loop() -> float:
                return run_loop(binary, outside, args.calls)

            def traced_loop() -> float:
                assert runner is not None
                return runner.run(args.calls)

            scenarios: list[tuple[str, str | None, Callable[[], float]]] = [
                ("baseline", None, outside_loop)
            ]
            for name in backends:
                scenarios += [
                    (f"{name} untraced", name, outside_loop),
                    (f"{name} traced", name, traced_loop),
                ]
            for _ in range(args.rounds):
                for label, active, loop in scenarios:
                    only(active)
                    samples.setdefault(label, []).append(loop())
            only(None)
            if "ftrace" in backends:
                dropped = backends["ftrace"].stats().events_dropped
        finally:
            if runner is not None:
                runner.close()
            for backend in backends.values():
                backend.close()

    base = min(samples["baseline"])
    print(f"getppid, {args.calls:,} calls per run, {args.rounds} interleaved rounds, "
          "thread CPU time")
    print(f"{'scenario':<20}{'min ns':>8}{'median':>8}{'added ns':>10}{'ratio':>7}")
    for label, values in samples.items():
        low, mid = min(values), statistics.median(values)
        print(f"{label:<20}{low:>8.1f}{mid:>8.1f}{low - base:>+10.1f}{low / base:>7.2f}")
    print("(added ns and ratio: each scenario's minimum against the baseline's)")
    if dropped:
        print(f"ftrace events lost to ring-buffer overrun (reader too slow): {dropped:,}")
    if busy:
        print("other tracers were active, every scenario pays for them too:")
        for item in busy:
            print(f"  {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
