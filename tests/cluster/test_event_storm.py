"""An event storm (issue 11, part 5): a container selected by the example shell policy runs a
shell 10,000 times, as fast as it can (well within a minute here), on the local cluster
(real kubelet, containerd, kernel; the apiserver auditing every write, audit_log.py).

Checked, and printed: the rule's Events stay one Event object whose series count grows
(events.k8s.io/v1), written at most once per event interval (the agent's EventLimiter,
30 s); NodeTracer status, TracingPolicy status and the agent's metrics all show exactly
10,000 matches and 10,000 execs of /bin/sh; the apiserver sees a number of writes bounded
by the configured intervals, not by the storm (counted in its audit log); the agent's
memory stays within a bound (RSS before, at the peak, after).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from test_e2e_loop import POLICY, POLICY_SRC, source_result, workload_execs
from traced_cluster import AGENT, OPERATOR, Traced, pretty, rss_line, traced_cluster

from podtrace_agent.cluster.agent import AgentOptions

POD = "storm"
SHELLS = 10_000
EVENT_INTERVAL_S = AgentOptions.event_interval  # what the agent runs with (no flag)
STATUS_INTERVAL_S = 1.0  # --status-interval of harness.podtrace_procs.Podtrace
MEMORY_BOUND_KIB = 32 * 1024  # growth of the agent's RSS over the storm that fails the test


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    yield from traced_cluster(tmp_path_factory)


def storm(release: str, done: str, end: str) -> str:
    return (f"read line < {release}; i=0; while [ $i -lt {SHELLS} ]; do /bin/sh -c :; "
            f"i=$((i+1)); done; echo $i > {done}; read line < {end}")


def counted(traced: Traced) -> dict[str, Any] | None:
    """NodeTracer and TracingPolicy status at SHELLS matches and /bin/sh execs; else None."""
    loop = traced.loop
    result = source_result(loop, POLICY_SRC)
    if result.get("ruleMatches") != [{"rule": "shell-exec", "count": SHELLS}]:
        return None
    if workload_execs(result.get("execs") or []).get("/bin/sh") != SHELLS:
        return None
    tp = loop.status("tracingpolicy", POLICY)
    if tp.get("eventsTotal") != SHELLS or tp.get("ruleCounts") != [
            {"rule": "shell-exec", "count": SHELLS}]:
        return None
    return {"nodetracer": result, "tracingpolicy": tp}


def test_ten_thousand_shells(traced: Traced) -> None:
    loop = traced.loop
    traced.policy_and_trace()
    release, end = traced.gate(f"{POD}-release"), traced.gate(f"{POD}-end")
    loop.run_pod(POD, storm(release, f"/gate/{POD}.done", end), gated=True)
    loop.wait_pod(POD)
    loop.wait_for("the storm pod traced", lambda: (t := loop.nt_target(POD))
                  and t["state"] == "Tracing", show=lambda: loop.nt_target(POD))
    time.sleep(2.0)  # the writes of setting up are done
    matches_before = traced.metric("podtrace_rule_matches_total", rule="shell-exec")
    execs_before = traced.metric("podtrace_events_total", type="exec")
    rss = {"before": traced.agent_rss_kib()}
    peak = rss["before"]

    began_at = datetime.now(UTC)
    began = time.monotonic()
    loop.release(f"{POD}-release")
    while not traced.marked(f"{POD}.done"):
        loop.podtrace.check_alive()
        peak = max(peak, traced.agent_rss_kib())
        assert time.monotonic() - began < 300, "the storm did not end in 5 minutes"
        time.sleep(0.5)
    storm_s = time.monotonic() - began

    def settled() -> dict[str, Any] | None:
        nonlocal peak
        peak = max(peak, traced.agent_rss_kib())
        got = counted(traced)
        events = loop.shell_events(POD)
        if got is None or [(e.get("series") or {}).get("count") for e in events] != [SHELLS]:
            return None
        return got | {"events": events}

    got = loop.wait_for("exactly 10,000 in status and in the Event series", settled,
                        timeout=EVENT_INTERVAL_S + 60,
                        show=lambda: counted(traced) or source_result(loop, POLICY_SRC))
    settled_s = time.monotonic() - began
    rss["peak"] = peak
    rss["after"] = traced.agent_rss_kib()
    matched = traced.metric("podtrace_rule_matches_total", rule="shell-exec") - matches_before
    execs = traced.metric("podtrace_events_total", type="exec") - execs_before
    writes = [w for w in traced.writes(since=began_at) if w.accepted]

    ctx = f"{pretty(got)}{loop.logs()}"
    assert (loop.gate_dir / f"{POD}.done").read_text().strip() == str(SHELLS), ctx
    assert (matched, execs) == (SHELLS, SHELLS), f"metrics: {matched} matches, {execs} execs"
    assert len(got["events"]) == 1, ctx  # one Event object, its series counting
    event = got["events"][0]
    assert event["type"] == "Warning" and event["reason"] == "ShellInContainer", ctx
    by = Counter(f"{'agent' if w.by(AGENT) else 'operator' if w.by(OPERATOR) else 'other'} "
                 f"{w.resource}{'/' + w.subresource if w.subresource else ''}"
                 for w in writes)  # fmt: skip
    window = settled_s + 1.0
    # Bounded by the configured rates, not by 10,000: one write per Event series per
    # interval (the first at once), one status write per status interval.
    event_writes = by["agent events"]
    assert event_writes <= math.ceil(window / EVENT_INTERVAL_S) + 1, dict(by)
    assert by["agent nodetracers/status"] <= math.ceil(window / STATUS_INTERVAL_S) + 1, dict(by)
    # The operator follows the agent's reports: at most one policy status write each.
    assert by["operator tracingpolicies/status"] <= by["agent nodetracers/status"] + 1, dict(by)
    assert rss["peak"] - rss["before"] < MEMORY_BOUND_KIB, rss_line("agent RSS", rss)
    print(f"\nevent storm: {SHELLS} shells in {storm_s:.1f} s; status, policy and metrics at "
          f"exactly {SHELLS} matches and /bin/sh execs, the Event series at {SHELLS}, "
          f"{settled_s:.1f} s after the storm began; one Event object, {event_writes} Event "
          f"writes; apiserver writes from the storm until settled: {sum(by.values())} "
          f"({dict(by)}); {rss_line('agent RSS', rss)}")
    loop.release(f"{POD}-end")
