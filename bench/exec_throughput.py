"""Exec throughput and bursts under the bcc backend (issue 12 part 4). Prints
figures; passes or fails nothing.

A traced container (syscall counting + exec) runs `/bin/true` as fast as the
machine allows (exec_loop.c: vfork + execve + wait), with one spawner and with
one spawner per CPU, with podtrace's programs detached and attached, the two
interleaved over the rounds. Reported: execs/s (median), and for the traced
runs the exec events received versus the execs made and the drops the
program counted (ring buffer full): received + dropped = made means every
loss was counted. Then a burst of 1,000,000 getppid calls in a fresh traced
container, counted exactly or not.

The events are read by this process as the agent reads them (BccBackend.poll
in a loop), so how fast Python drains the ring buffer is part of the figure.

Run as root:  PYTHONPATH=tests .venv/bin/python bench/exec_throughput.py [--execs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from typing import Any

from common import Hierarchy, build, cgroup_id, need_root

from podtrace_agent.backend import ExecEvent
from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

TRACED_MASK = Probe.SYSCALLS | Probe.EXEC


class Attachments:
    """Detach and re-attach every tracepoint of a started BccBackend (bench only:
    "without podtrace" then needs no second compile)."""

    def __init__(self, backend: Any) -> None:
        bpf = backend._bpf
        self.bpf = bpf
        self.tracepoints = [tp for tp in bpf.tracepoint_fds]
        self.raw = list(bpf.raw_tracepoint_fds)
        self.on = True

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        self.on = on
        for tp in self.tracepoints:
            if on:
                category, event = tp.decode().split(":")
                fn = f"tracepoint__{category}__{event}".encode()
                self.bpf.attach_tracepoint(tp=tp, fn_name=fn)
            else:
                self.bpf.detach_tracepoint(tp)
        for tp in self.raw:
            if on:
                self.bpf.attach_raw_tracepoint(tp=tp, fn_name=b"raw_tracepoint__" + tp)
            else:
                self.bpf.detach_raw_tracepoint(tp)


def spawn(loop: Any, container: Any, spawners: int, execs: int) -> tuple[int, float]:
    """`spawners` exec loops at once in `container`; (execs made, wall seconds)."""
    start = time.monotonic()
    procs = [subprocess.Popen([str(loop), str(container / "cgroup.procs"), str(execs)],
                              stdout=subprocess.PIPE, text=True) for _ in range(spawners)]
    made = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        made += int(out.split()[0])
    return made, time.monotonic() - start


class Reader(threading.Thread):
    """Polls the backend like the agent's loop; counts exec events of one cgroup."""

    def __init__(self, backend: Any, cgroup: int) -> None:
        super().__init__(daemon=True)
        self.backend, self.cgroup = backend, cgroup
        self.execs = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            events = self.backend.poll(0.05)
            self.execs += sum(1 for e in events
                              if isinstance(e, ExecEvent) and e.cgroup_id == self.cgroup)

    def drain(self) -> None:
        """Read until quiet, then stop."""
        seen = -1
        while seen != self.execs:
            seen = self.execs
            time.sleep(0.3)
        self.stop.set()
        self.join()


def measure(execs: int = 2000, rounds: int = 3, burst: int = 1_000_000) -> dict[str, Any]:
    from podtrace_agent.backend import BackendOptions
    from podtrace_agent.bpf.loader import BccBackend

    loop, getppid_loop = build("exec_loop"), build("getppid_loop")
    cpus = os.cpu_count() or 1
    result: dict[str, Any] = {"execs_per_spawner": execs, "rounds": rounds, "cpus": cpus}
    with Hierarchy() as h:
        backend = BccBackend(h.kubepods(), BackendOptions())
        backend.start()
        try:
            attach = Attachments(backend)
            container = h.container()
            cid = cgroup_id(container)
            backend.trace(cid, h.rel(container), TRACED_MASK)
            for spawners in (1, cpus):
                rates: dict[str, list[float]] = {"without": [], "with": []}
                made_total = received = 0
                dropped_before = backend.stats().events_dropped
                for _ in range(rounds):
                    attach.set(False)
                    made, seconds = spawn(loop, container, spawners, execs)
                    rates["without"].append(made / seconds)
                    attach.set(True)
                    reader = Reader(backend, cid)
                    reader.start()
                    made, seconds = spawn(loop, container, spawners, execs)
                    reader.drain()
                    rates["with"].append(made / seconds)
                    made_total += made
                    received += reader.execs
                dropped = backend.stats().events_dropped - dropped_before
                without = statistics.median(rates["without"])
                with_ = statistics.median(rates["with"])
                result[f"spawners_{spawners}"] = {
                    "spawners": spawners, "execs_per_s_without": without,
                    "execs_per_s_with": with_, "ratio": with_ / without,
                    "made": made_total, "received": received, "dropped_counted": dropped,
                    "all_accounted": received + dropped >= made_total,
                }  # fmt: skip
            # the burst: a fresh traced container, one process, `burst` getppid calls
            fresh = h.container()
            backend.trace(cgroup_id(fresh), h.rel(fresh), TRACED_MASK)
            subprocess.run([str(getppid_loop), str(fresh / "cgroup.procs"), str(burst)],
                           check=True, capture_output=True)  # fmt: skip
            counts = backend.syscall_counts().get(cgroup_id(fresh), {})
            counted = counts.get(number_of("getppid"), 0)
            result["burst"] = {"made": burst, "counted": counted, "exact": counted == burst}
        finally:
            backend.close()
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"exec /bin/true in a traced container, {result['execs_per_spawner']:,} per spawner, "
          f"median of {result['rounds']}")
    for key in ("spawners_1", f"spawners_{result['cpus']}"):
        r = result[key]
        print(f"  {r['spawners']} spawner(s): {r['execs_per_s_without']:,.0f}/s without, "
              f"{r['execs_per_s_with']:,.0f}/s with podtrace ({r['ratio']:.2f}x); "
              f"events {r['received']:,} of {r['made']:,} made, {r['dropped_counted']:,} "
              f"dropped and counted")
    b = result["burst"]
    print(f"  burst: {b['made']:,} getppid, counted {b['counted']:,} "
          f"({'exact' if b['exact'] else 'NOT exact'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=2000, help="per spawner and run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    need_root()
    result = measure(args.execs, args.rounds, args.burst)
    print(json.dumps(result, indent=1)) if args.json else print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
