"""What `podtrace-agent run` costs its node (issue 12 part 5): resident memory
and CPU (% of one CPU, from /proc/<pid>/stat) idle, while tracing 50
containers (syscalls + exec, one sleeping process each), and under exec load
(a traced container running /bin/true as fast as it can, one spawner per
CPU); and the BCC compile at start-up: its time and the peak RSS of a process
that only compiles and loads podtrace.c. The agent is the real process of
cluster_session.py. Prints figures; passes or fails nothing.

Run as root:  PYTHONPATH=tests:bench .venv/bin/python bench/agent_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from cluster_session import Session, session
from common import (
    BENCH,
    Hierarchy,
    build,
    cpu_percent,
    cpu_seconds,
    need_root,
    peak_rss_kib,
    rss_kib,
)

POLICY = "bench-cost"


def compile_cost() -> dict[str, float]:
    """The bcc backend's start (compile + load + maps filled) in a fresh process:
    seconds, and that process's peak RSS (ru_maxrss, clang's included)."""
    out = subprocess.run([sys.executable, str(BENCH / "agent_cost.py"), "--compile-only"],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def _compile_only() -> None:
    import resource

    from podtrace_agent.backend import BackendOptions
    from podtrace_agent.bpf.loader import BccBackend

    with Hierarchy() as h:
        kubepods = h.kubepods()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        backend = BccBackend(kubepods, BackendOptions())
        backend.start()
        seconds = time.perf_counter() - start
        backend.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024,
                      "rss_before_mib": before / 1024}))  # fmt: skip


def sample(pid: int, seconds: float) -> dict[str, float]:
    return {"cpu_percent": cpu_percent(pid, seconds), "rss_mib": rss_kib(pid) / 1024}


def measure(s: Session, window: float = 10.0, containers: int = 50,
            execs: int = 3000) -> dict[str, Any]:  # fmt: skip
    pid = s.agent_pid
    result: dict[str, Any] = {"window_s": window, "containers": containers}
    result["startup_peak_rss_mib"] = peak_rss_kib(pid) / 1024
    time.sleep(2)
    result["idle"] = sample(pid, window)

    made = s.pods(containers, {"app": "cost"}, sleeper=True)
    s.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "podtrace.io/v1alpha1", "kind": "TracingPolicy", "metadata": {"name": POLICY},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "cost"}}},
                 "observe": {"syscalls": {"mode": "All"}, "processes": {"exec": True}}}}))
    deadline = time.monotonic() + 120
    while sum(s.in_map(c.cgroup_id) is not None for c in made) < containers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all {containers} containers traced after 120 s")
        time.sleep(0.5)
    time.sleep(2)
    result["tracing"] = sample(pid, window)

    loop = build("exec_loop")
    spawners = os.cpu_count() or 1
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    procs = [subprocess.Popen([str(loop), str(made[i % containers].cgroup / "cgroup.procs"),
                               str(execs)], stdout=subprocess.PIPE, text=True)
             for i in range(spawners)]  # fmt: skip
    total = sum(int(p.communicate(timeout=600)[0].split()[0]) for p in procs)
    seconds = time.monotonic() - t0
    result["exec_load"] = {
        "cpu_percent": 100 * (cpu_seconds(pid) - cpu0) / seconds,
        "rss_mib": rss_kib(pid) / 1024, "execs": total, "execs_per_s": total / seconds,
        "spawners": spawners,
    }  # fmt: skip
    result["peak_rss_mib"] = peak_rss_kib(pid) / 1024
    s.kubectl("delete", "tracingpolicy", POLICY, "--wait=false")
    result["compile"] = compile_cost()
    return result


def print_table(r: dict[str, Any]) -> None:
    print(f"podtrace-agent run (bcc), CPU in % of one CPU over {r['window_s']:.0f} s")
    print(f"  idle:                     {r['idle']['cpu_percent']:5.1f} %  RSS "
          f"{r['idle']['rss_mib']:.1f} MiB")
    print(f"  tracing {r['containers']} containers:    {r['tracing']['cpu_percent']:5.1f} %  RSS "
          f"{r['tracing']['rss_mib']:.1f} MiB")
    e = r["exec_load"]
    print(f"  exec load ({e['execs_per_s']:,.0f} execs/s):  {e['cpu_percent']:5.1f} %  RSS "
          f"{e['rss_mib']:.1f} MiB")
    c = r["compile"]
    print(f"  BCC compile + load at start-up: {c['seconds']:.1f} s, peak RSS "
          f"{c['peak_rss_mib']:.0f} MiB (the agent's own peak: {r['peak_rss_mib']:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    need_root()
    if args.compile_only:
        _compile_only()
        return
    with session() as s:
        print_table(measure(s, args.window))


if __name__ == "__main__":
    main()
