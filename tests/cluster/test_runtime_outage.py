"""containerd stops and comes back while a pod is traced (issue 11, part 3), on the local
cluster (real kubelet, containerd, kernel). tests/runtime/test_runtime_restart.py checks
the enricher alone against a containerd restart; this is the agent as a whole:

- the containers outlive their runtime and the kernel keeps counting: work done by the
  traced process during the outage reaches NodeTracer and ContainerTrace exactly;
- the agent says so: NodeTracer `RuntimeConnected=False`, reason `RuntimeUnreachable`,
  naming the endpoint and since when (and `podtrace_runtime_reachable` 0), while Ready
  stays True (tracing works);
- an agent (re)started during the outage names the container from its cgroup path and
  the Kubernetes API (target identity `kubernetes`), still traces it exactly, and says
  that no runtime answers (`NoCRIRuntime`);
- when containerd is back, all of it recovers by itself: `RuntimeConnected=True`, the
  target named by CRI again; no agent ever crashed (the stopped one exited 0; no
  traceback in the log).

Figures printed: how long the agent took to notice the outage and the return.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from test_e2e_loop import NS, workload_execs
from traced_cluster import Traced, pretty, traced_cluster

TRACE = "rt-rec"
POD = "web-rt"


def work(rounds: int) -> str:
    return (f"i=0; while [ $i -lt {rounds} ]; do /bin/cat /etc/hostname >/dev/null; "
            "/bin/ls / >/dev/null; i=$((i+1)); done; /bin/sh -c /bin/true; ")


def script(gates: list[str], marks: list[str]) -> str:
    """Work, then for each gate: wait for it, work, leave its mark."""
    parts = [work(3)]
    for gate, mark in zip(gates, marks, strict=True):
        parts.append(f"read line < {gate}; {work(10)}echo ok > {mark}; ")
    return "".join(parts) + "sleep 3600"


def execs(rounds: int) -> Counter[str]:
    return Counter({"/bin/cat": rounds, "/bin/ls": rounds, "/bin/sh": 1, "/bin/true": 1})


START = Counter({"/bin/busybox": 1}) + execs(3)
PHASE = execs(10)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    yield from traced_cluster(tmp_path_factory)


def trace_at(traced: Traced, expected: Counter[str]) -> dict[str, Any] | None:
    ct = traced.loop.status("containertrace", TRACE, NS)
    got = workload_execs(ct.get("execs") or [])
    return ct if got == dict(expected) and ct.get("phase") == "Tracing" else None


def test_containerd_outage(traced: Traced) -> None:
    loop = traced.loop
    cluster = loop.cluster
    containerd = cluster.containerd
    assert containerd is not None
    traced.policy_and_trace(TRACE)
    gates = [traced.gate(f"{POD}-{i}") for i in range(3)]
    marks = [f"{POD}.{i}" for i in range(3)]
    loop.run_pod(POD, script(gates, [f"/gate/{m}" for m in marks]), gated=True)
    loop.wait_pod(POD)
    loop.wait_for("the first work in the trace", lambda: trace_at(traced, START),
                  show=lambda: loop.status("containertrace", TRACE, NS))
    target = loop.nt_target(POD)
    assert target and target["identity"] == "cri", pretty(target)

    def release(i: int) -> None:
        loop.release(f"{POD}-{i}")
        loop.wait_for(f"the work after gate {i}", lambda: traced.marked(marks[i]))

    def connected() -> dict[str, Any]:
        return traced.nt_condition("RuntimeConnected")

    # containerd stops: its containers go on, the agent notices and says why.
    containerd.stop()
    stopped = time.monotonic()
    down = loop.wait_for("RuntimeConnected=False", lambda: (c := connected())
                         .get("reason") == "RuntimeUnreachable" and c, show=connected)
    noticed = time.monotonic() - stopped
    ctx = f"{pretty(loop.nodetracer().get('status'))}{loop.logs()}"
    assert down["status"] == "False" and cluster.runtime_endpoint in down["message"], ctx
    assert "has not answered since" in down["message"], ctx
    assert traced.nt_condition("Ready")["status"] == "True", ctx
    assert traced.metric("podtrace_runtime_reachable") == 0, ctx

    release(0)  # work during the outage, counted exactly
    loop.wait_for("the work during the outage in the trace",
                  lambda: trace_at(traced, START + PHASE),
                  show=lambda: loop.status("containertrace", TRACE, NS))

    # An agent started while containerd is down: the container named from its cgroup
    # path and the Kubernetes API, and traced exactly.
    code = loop.podtrace.restart_agent()
    assert code == 0, f"the agent stopped with {code}{loop.logs()}"
    loop.wait_for("a restarted agent without runtime", lambda: (c := connected())
                  .get("reason") == "NoCRIRuntime" and c, show=connected)
    target = loop.wait_for("the target traced again", lambda: (t := loop.nt_target(POD))
                           and t["state"] == "Tracing" and t, show=lambda: loop.nt_target(POD))
    assert target["identity"] == "kubernetes", pretty(target)
    release(1)
    loop.wait_for("the work after the agent's restart in the trace",
                  lambda: trace_at(traced, START + PHASE + PHASE),
                  show=lambda: loop.status("containertrace", TRACE, NS))

    # containerd is back: everything recovers by itself.
    containerd.start()
    started = time.monotonic()
    loop.wait_for("RuntimeConnected=True", lambda: connected().get("status") == "True",
                  show=connected)
    recovered = time.monotonic() - started
    target = loop.wait_for("the target named by CRI again",
                           lambda: (t := loop.nt_target(POD)) and t["identity"] == "cri" and t,
                           show=lambda: loop.nt_target(POD))
    renamed = time.monotonic() - started
    assert connected()["reason"] == "CRIAvailable", pretty(connected())
    assert traced.metric("podtrace_runtime_reachable") == 1
    release(2)
    ct = loop.wait_for("the work after the return in the trace",
                       lambda: trace_at(traced, START + PHASE + PHASE + PHASE),
                       show=lambda: loop.status("containertrace", TRACE, NS))
    assert ct["targets"][0]["state"] == "Tracing", pretty(ct)
    loop.podtrace.check_alive()
    assert "Traceback" not in loop.podtrace.agent_log.read_text(), loop.logs()
    print(f"\nruntime outage: containerd stopped; the agent said RuntimeUnreachable after "
          f"{noticed:.1f} s, counted the work done meanwhile exactly, an agent restarted "
          f"meanwhile traced on with path/API identity; containerd back: RuntimeConnected "
          f"after {recovered:.1f} s, the target named by CRI after {renamed:.1f} s")
