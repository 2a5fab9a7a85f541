"""The apiserver goes away for 60 s while a traced pod works (issue 11, part 2).

On the local cluster (real kubelet, containerd, kernel; the apiserver auditing every
write, audit_log.py), a pod selected by the example shell policy and a ContainerTrace
does known work before the outage, and more while kube-apiserver is stopped (the same
etcd and data, certificates and port; then started again). Checked:

- while the apiserver is away the agent keeps tracing: its own /metrics (served
  without the apiserver) count every exec of the work done meanwhile, exactly; its
  memory stays within a bound (what waits for the apiserver is one status document
  and at most one write per Event series: cluster/sender.py), printed before, at the
  peak during, and after;
- once the apiserver is back, NodeTracer and ContainerTrace status reach the exact
  totals (printed: the catch-up time, apiserver ready → both exact), and the Event
  series its exact count;
- nothing is written twice: no write by the operator or the agent that changed nothing,
  one Event object for the shell series (its count grown), no operator Event twice for
  one status transition.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from audit_log import no_ops
from test_e2e_loop import NS, POLICY_SRC, TRACE_SRC, source_result, workload_execs
from test_operator_leadership import check_events
from traced_cluster import AGENT, OPERATOR, Traced, pretty, rss_line, sample_rss, traced_cluster

TRACE = "rec"
POD = "web-out"
OUTAGE_S = 60.0
ROUNDS = 60  # rounds of work during the outage, ~0.55 s each
MEMORY_BOUND_KIB = 32 * 1024  # growth of the agent's RSS over the outage that fails the test


def script(release: str, end: str, done: str) -> str:
    """Before: 5 × (cat, ls), 3 shells. Released: ROUNDS × (cat, ls, sleep 0.5), a shell
    every 10th round; then the marker `done`, and wait for `end`."""
    return (
        "i=0; while [ $i -lt 5 ]; do /bin/cat /etc/hostname >/dev/null; /bin/ls / >/dev/null; "
        "i=$((i+1)); done; "
        "k=0; while [ $k -lt 3 ]; do /bin/sh -c /bin/true; k=$((k+1)); done; "
        f"read line < {release}; "
        f"j=0; while [ $j -lt {ROUNDS} ]; do /bin/cat /etc/hostname >/dev/null; "
        "/bin/ls / >/dev/null; if [ $((j % 10)) -eq 0 ]; then /bin/sh -c /bin/true; fi; "
        "/bin/sleep 0.5; j=$((j+1)); done; "
        f"echo done > {done}; read line < {end}"
    )


BEFORE = {"/bin/busybox": 1, "/bin/cat": 5, "/bin/ls": 5, "/bin/sh": 3, "/bin/true": 3}
DURING = {"/bin/cat": ROUNDS, "/bin/ls": ROUNDS, "/bin/sleep": ROUNDS,
          "/bin/sh": ROUNDS // 10, "/bin/true": ROUNDS // 10}  # fmt: skip
TOTAL = dict(Counter(BEFORE) + Counter(DURING))


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    yield from traced_cluster(tmp_path_factory)


def exact(traced: Traced, expected: dict[str, int]) -> dict[str, Any] | None:
    """NodeTracer (both sources) and ContainerTrace status at the `expected` execs, and the
    policy's shell count; None until then."""
    loop = traced.loop
    shells = expected["/bin/sh"]
    for src in (POLICY_SRC, TRACE_SRC):
        if workload_execs(source_result(loop, src).get("execs") or []) != expected:
            return None
    if source_result(loop, POLICY_SRC).get("ruleMatches") != [{"rule": "shell-exec",
                                                               "count": shells}]:
        return None
    ct = loop.status("containertrace", TRACE, NS)
    if ct.get("phase") != "Tracing" or workload_execs(ct.get("execs") or []) != expected:
        return None
    tp = loop.status("tracingpolicy", "web-shells")
    return ct if tp.get("eventsTotal") == shells else None


def shell_series(traced: Traced) -> list[dict[str, Any]]:
    return traced.loop.shell_events(POD)


def test_apiserver_outage(traced: Traced) -> None:
    loop = traced.loop
    cluster = loop.cluster
    api = cluster.apiserver
    assert api is not None
    traced.policy_and_trace(TRACE)
    release, end = traced.gate(f"{POD}-release"), traced.gate(f"{POD}-end")
    loop.run_pod(POD, script(release, end, f"/gate/{POD}.done"), gated=True)
    loop.wait_pod(POD)
    loop.wait_for("the work before the outage, exact in both statuses",
                  lambda: exact(traced, BEFORE), show=lambda: loop.status("containertrace",
                                                                          TRACE, NS))
    loop.wait_for("the shell Event", lambda: shell_series(traced),
                  show=lambda: loop.events(NS))
    failed_before = traced.metric("podtrace_api_write_errors_total", what="status")
    execs_before = traced.metric("podtrace_events_total", type="exec")
    matches_before = traced.metric("podtrace_rule_matches_total", rule="shell-exec")
    rss = {"before": traced.agent_rss_kib()}

    # The outage: the workload is released as the apiserver stops, works ~35 s, waits.
    api.stop_apiserver()
    loop.release(f"{POD}-release")
    began = time.monotonic()
    rss["peak during"] = sample_rss(traced, OUTAGE_S - 5.0)
    assert traced.marked(f"{POD}.done"), "the workload did not finish within the outage"
    counted = traced.metric("podtrace_events_total", type="exec") - execs_before
    matched = traced.metric("podtrace_rule_matches_total", rule="shell-exec") - matches_before
    refused = traced.metric("podtrace_api_write_errors_total", what="status") - failed_before
    rss["peak during"] = max(rss["peak during"], sample_rss(traced, OUTAGE_S -
                                                            (time.monotonic() - began)))
    ready_in = api.start_apiserver()
    back = time.monotonic()
    back_at = datetime.now(UTC)

    ct = loop.wait_for("both statuses at the exact totals after the outage",
                       lambda: exact(traced, TOTAL), timeout=120,
                       show=lambda: loop.status("containertrace", TRACE, NS))
    caught_up = time.monotonic() - back
    series = loop.wait_for("the Event series at its exact count",
                           lambda: [e for e in shell_series(traced)
                                    if (e.get("series") or {}).get("count") == TOTAL["/bin/sh"]],
                           timeout=90, show=lambda: shell_series(traced))
    series_in = time.monotonic() - back
    rss["after"] = traced.agent_rss_kib()
    time.sleep(3.0)  # what the operator and agent write right after catching up, too
    writes = traced.writes()
    after = [w for w in writes if w.done > back_at]

    nt = loop.nodetracer()
    ctx = f"{pretty(ct)}\n{pretty(nt.get('status'))}{loop.logs()}"
    assert counted == sum(DURING.values()), f"execs counted during the outage: {counted}{ctx}"
    assert matched == DURING["/bin/sh"], ctx
    assert rss["peak during"] - rss["before"] < MEMORY_BOUND_KIB, rss_line("agent RSS", rss)
    assert refused > 0, "the agent never tried to write its status during the outage"
    # One Event object for the series, not one per shell or per retry.
    assert len(series) == len(shell_series(traced)) == 1, pretty(shell_series(traced))
    assert ct["targets"][0]["state"] == "Tracing" and ct.get("eventsLost", 0) == 0, ctx
    assert no_ops(after, OPERATOR) == [], f"operator writes that changed nothing: " \
        f"{no_ops(after, OPERATOR)}"
    assert no_ops(after, AGENT) == [], f"agent writes that changed nothing: {no_ops(after, AGENT)}"
    event_writes, transitions = check_events(writes)
    kinds = Counter(f"{'agent' if w.by(AGENT) else 'operator' if w.by(OPERATOR) else 'other'} "
                    f"{w.resource}{'/' + w.subresource if w.subresource else ''}"
                    for w in after if w.accepted)  # fmt: skip
    print(f"\napiserver outage: stopped {OUTAGE_S:.0f} s (ready again in {ready_in:.1f} s); "
          f"during it the agent counted {counted:.0f} execs and {matched:.0f} shell matches "
          f"(exact) and tried {refused:.0f} status writes (backoff); catch-up (apiserver "
          f"ready -> NodeTracer and ContainerTrace exact) "
          f"{caught_up:.1f} s, Event series at {TOTAL['/bin/sh']} after {series_in:.1f} s; "
          f"{rss_line('agent RSS', rss)}; writes after the return until settled: "
          f"{dict(kinds)}; 0 no-op writes, operator Events {event_writes} for "
          f"{transitions} transitions, none twice")
    loop.release(f"{POD}-end")
