"""The agent under container churn: its resident memory (RSS) before and after
thousands of container cgroups come and go, and how many containers per second
the churn made while the agent traced them. Prints figures; passes or fails
nothing (tests/kernel/test_churn.py checks that no per-container state is left).

The agent is the real thing in this process: discovery of a private kubepods,
the agent's backend start-up, the core's loop in a thread with one of the two
modes: `standalone` (JSON lines, written to /dev/null) or `cluster` (the
`run` agent: node state, plan, status; its apiserver edge is an in-memory stub,
so nothing here measures an apiserver). The churn (tests/harness/churn.py)
creates and removes pods with one container each, every 10th with a
sub-cgroup, every 50th running /bin/true.

As fast as it goes (well over a thousand containers a second here, far more than a
kubelet starts), the ring buffer overflows and the core's resyncs repair the
state; `--rate` paces the churn. Round 1 warms up (first allocations, BCC's own
buffers); RSS is then read after each round. A flat RSS over rounds is what
bounded memory looks like.

Run as root:
    PYTHONPATH=tests .venv/bin/python bench/churn.py [--containers 2000] [--rounds 4]
        [--backend bcc|ftrace] [--mode standalone|cluster] [--rate 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import cgroup2_mount

from harness.churn import ChurnRoot, churn
from podtrace_agent.cluster.agent import Agent, AgentOptions
from podtrace_agent.cluster.metrics import AgentMetrics
from podtrace_agent.core import Core, Mode, Output, Stop, start_backend
from podtrace_agent.cri.endpoints import RuntimeReport
from podtrace_agent.discovery import discover
from podtrace_agent.standalone import Lines


def rss_kib() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class StubKube:
    """The cluster mode's apiserver edge, in memory: keeps only the last status."""

    last_status: dict[str, Any] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def patch_status(self, status: dict[str, Any]) -> None:
        self.last_status = status

    def write_event(self, **_: Any) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--backend", choices=("bcc", "ftrace"), default="bcc")
    parser.add_argument("--mode", choices=("standalone", "cluster"), default="standalone")
    parser.add_argument("--rate", type=float, help="at most this many containers per second "
                        "(default: as fast as the churn goes)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (BPF, tracefs, cgroups)")

    with ChurnRoot(cgroup2_mount()) as root, open(os.devnull, "w") as devnull:
        report = discover(kubepods=root.kubepods, backend=args.backend, allow_mount=True)
        kubepods = report.cgroup.kubepods()
        if kubepods is None or report.fatal:
            sys.exit(f"discovery: {[p.message for p in report.fatal]}")
        backend, report = start_backend(report, args.backend, kubepods)
        if backend is None:
            sys.exit(f"no backend: {report.backend.reason}")
        mode: Mode
        agent: Agent | None = None
        if args.mode == "standalone":
            mode = lines = Lines(backend, Output(devnull))
        else:
            agent = Agent(options=AgentOptions(node="bench", status_interval=1.0),
                          report=report, backend=backend, kube=StubKube(),  # type: ignore[arg-type]
                          metrics=AgentMetrics("bench"), runtime_report=RuntimeReport(),
                          emit=Output(devnull))
            agent.inbox.put(("nodetracer", "SYNC", {"items": [{"metadata": {"generation": 1}}]}))
            mode = agent
        core = Core(backend, kubepods, mode, counts_every=1.0 if agent else None)
        if agent is not None:
            agent.containers = core.containers
        stop = Stop()
        loop = threading.Thread(target=core.run, args=(stop,), name="core")
        loop.start()
        try:
            print(f"backend {report.backend.name.value}, mode {args.mode}, "
                  f"{args.containers} containers per round")
            start_rss = rss_kib()
            print(f"RSS after start-up: {start_rss / 1024:.1f} MiB")
            after_warmup = start_rss
            for round_ in range(1, args.rounds + 1):
                made = churn(root, args.containers, rate=args.rate)
                deadline = time.monotonic() + 60
                while core.containers.cgroup_count and time.monotonic() < deadline:
                    time.sleep(0.1)
                rss = rss_kib()
                if round_ == 1:
                    after_warmup = rss
                state = (f"containers {len(core.containers)}, cgroups "
                         f"{core.containers.cgroup_count}")
                if agent is not None:
                    state += f", node state cgroups {len(agent.state.cgroups)}"
                else:
                    state += f", held lines {lines.held}"
                print(f"round {round_}: {made.containers} containers ({made.subgroups} "
                      f"sub-cgroups, {made.execs} execs) in {made.seconds:.1f} s = "
                      f"{made.containers / made.seconds:.0f} containers/s; RSS "
                      f"{rss / 1024:.1f} MiB; left: {state}")
        finally:
            stop()
            loop.join(60)
            stats = backend.stats()
            backend.close()
        print(f"RSS before: {after_warmup / 1024:.1f} MiB (after round 1), after: "
              f"{rss / 1024:.1f} MiB (after round {args.rounds}), "
              f"change {(rss - after_warmup) / 1024:+.1f} MiB")
        print(f"events seen {stats.events_seen}, dropped {stats.events_dropped}, "
              f"resyncs {core.resyncs}, unattributed {core.unattributed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
