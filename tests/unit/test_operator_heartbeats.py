"""A node's agent found silent from its NodeTracer heartbeats: on the operator's own
clock, NodeTracer Ready Unknown, and the Reporting condition of the policies and
traces with targets there (heartbeats.py, policy_status.py, trace_status.py, and the
runtime's memory of heartbeats). The clock is passed in; no apiserver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from test_operator_status import SELECTED, nodetracer, reports, tally, target, trace_input

from podtrace_api.base import Condition
from podtrace_api.conditions import get_condition
from podtrace_operator.events import EventType
from podtrace_operator.heartbeats import (
    ALL_REPORTING,
    NEVER,
    NOT_REPORTING,
    REPORTING,
    STALE,
    Seen,
    Silence,
    observe,
    ready_unknown,
    reporting_condition,
    silence,
    stale_at,
)
from podtrace_operator.policy_status import policy_events, policy_status
from podtrace_operator.reports import node_report
from podtrace_operator.runtime import Runtime, Settings
from podtrace_operator.trace_status import trace_events, trace_status

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=10)
SID, CT = "TracingPolicy/shells", "ContainerTrace/shop/rec"
S = timedelta(seconds=1)


def ready(status: str = "True", reason: str = "Tracing") -> Condition:
    return Condition(type="Ready", status=status, reason=reason, message="",
                     last_transition_time=T0 - 60 * S, observed_generation=3)  # fmt: skip


def test_a_heartbeat_counts_from_when_the_operator_saw_it_change() -> None:
    agent_clock = T0 - timedelta(hours=5)  # skewed: only changes of it count
    seen = observe(None, agent_clock, T0)
    assert seen == Seen(agent_clock, T0)
    assert observe(seen, agent_clock, T0 + 9 * S) is seen  # no new heartbeat
    assert observe(seen, agent_clock + 2 * S, T0 + 9 * S) == Seen(agent_clock + 2 * S, T0 + 9 * S)
    assert stale_at(seen, TIMEOUT) == T0 + TIMEOUT
    assert silence("n1", seen, T0 + TIMEOUT - S, TIMEOUT) is None
    assert silence("n1", seen, T0 + TIMEOUT, TIMEOUT) == Silence("n1", agent_clock, TIMEOUT)


def test_a_nodetracer_first_seen_already_marked_unknown_is_silent_at_once() -> None:
    marked = [ready("Unknown", STALE)]
    seen = observe(None, T0 - 300 * S, T0, marked=marked, timeout=TIMEOUT)
    assert silence("n1", seen, T0, TIMEOUT) is not None
    # Any other Unknown (the agent's own) is not the operator's mark.
    other = observe(None, T0 - 300 * S, T0, marked=[ready("Unknown", "Starting")],
                    timeout=TIMEOUT)  # fmt: skip
    assert silence("n1", other, T0, TIMEOUT) is None


def test_ready_goes_unknown_with_the_age_and_last_heartbeat_once() -> None:
    others = Condition(type="BackendLoaded", status="True", reason="BackendBcc", message="",
                       last_transition_time=T0 - 60 * S)  # fmt: skip
    quiet = Silence("n1", datetime(2026, 1, 1, 11, 59, 48, tzinfo=UTC), 12 * S)
    conditions = ready_unknown([others, ready()], quiet, TIMEOUT, T0)
    assert conditions is not None
    got = get_condition(conditions, "Ready")
    assert got is not None
    assert (got.status, got.reason, got.last_transition_time) == ("Unknown", STALE, T0)
    assert "no heartbeat for 12s (heartbeat timeout 10s; last heartbeat " \
           "2026-01-01T11:59:48Z)" in got.message
    assert got.observed_generation == 3
    assert get_condition(conditions, "BackendLoaded") == others  # as the agent left it
    assert ready_unknown(conditions, quiet, TIMEOUT, T0 + 5 * S) is None  # written once

    never = ready_unknown([], Silence("n2", None, 11 * S), TIMEOUT, T0)
    assert never is not None
    assert (never[0].reason, never[0].status) == (NEVER, "Unknown")
    assert "has not reported" in never[0].message


def test_reporting_names_silent_nodes_with_a_message_that_does_not_age() -> None:
    quiet = {"n2": Silence("n2", T0 - 30 * S, 30 * S), "n9": Silence("n9", None, 99 * S)}
    fine = reporting_condition([], ["n1"], quiet, T0, 1)
    assert (fine[0].type, fine[0].status, fine[0].reason) == (REPORTING, "True", ALL_REPORTING)
    bad = reporting_condition(fine, ["n1", "n2"], quiet, T0, 1)
    assert (bad[0].status, bad[0].reason) == ("False", NOT_REPORTING)
    assert "n2 (last heartbeat 2026-01-01T11:59:30Z)" in bad[0].message and "n9" not in \
        bad[0].message
    later = {"n2": Silence("n2", T0 - 30 * S, 90 * S)}  # the same silence, older
    assert reporting_condition(bad, ["n1", "n2"], later, T0 + 60 * S, 1) == bad
    many = {f"n{i:02}": Silence(f"n{i:02}", None, S) for i in range(25)}
    capped = reporting_condition([], many, many, T0, 1)[0].message
    assert "n09 (never reported)" in capped and "n10" not in capped and "and 15 more" in capped


def two_node_policy(silent: dict[str, Silence], old=None, now=T0):  # type: ignore[no-untyped-def]
    nts = reports(nodetracer("n1", sources={SID: 1}, targets=[target("u1")]),
                  nodetracer("n2", sources={SID: 1}, targets=[target("u2")]))  # fmt: skip
    return policy_status(generation=1, problems=[], placement={"n1": 1, "n2": 1}, reports=nts,
                         rules={}, source_id=SID, old=old, now=now, silent=silent)  # fmt: skip


def test_a_policy_names_the_node_whose_agent_is_silent_and_recovers() -> None:
    healthy = two_node_policy({})
    assert healthy.nodes == "2/2"
    assert get_condition(healthy.conditions, REPORTING).status == "True"  # type: ignore[union-attr]
    down = two_node_policy({"n2": Silence("n2", T0 - 20 * S, 12 * S)}, healthy, T0 + 20 * S)
    assert down.nodes == "1/2"
    is_ready = get_condition(down.conditions, "Ready")
    assert is_ready is not None and (is_ready.status, is_ready.reason) == ("False", NOT_REPORTING)
    assert "no heartbeat from the agent of n2" in is_ready.message
    reporting = get_condition(down.conditions, REPORTING)
    assert reporting is not None and reporting.status == "False" and "n2" in reporting.message
    warned = policy_events(healthy, down)
    assert [(e.type, e.reason) for e in warned if e.reason == NOT_REPORTING] == [
        (EventType.WARNING, NOT_REPORTING)]
    back = two_node_policy({}, down, T0 + 40 * S)
    assert back.nodes == "2/2" and get_condition(back.conditions, "Ready").status == "True"  # type: ignore[union-attr]
    assert (EventType.NORMAL, ALL_REPORTING) in [(e.type, e.reason)
                                                 for e in policy_events(down, back)]


def test_a_trace_names_the_silent_node_of_its_targets_only() -> None:
    nts = reports(nodetracer("n1", sources={CT: 1}, targets=[target("u1")]),
                  nodetracer("n2", sources={}, targets=[]))  # fmt: skip

    def run(silent: dict[str, Silence], old: Any = None) -> Any:
        return trace_status(trace_input(old=old), source_id=CT, targets=SELECTED, reports=nts,
                            tally=tally(nts, CT), arches=["amd64"], now=T0,
                            pending_timeout=timedelta(minutes=5), top_n=2,
                            silent=silent).status  # fmt: skip

    assert get_condition(run({"n2": Silence("n2", T0, TIMEOUT)}).conditions,
                         REPORTING).status == "True"  # type: ignore[union-attr]  # no target there
    first = run({})
    down = run({"n1": Silence("n1", T0 - 30 * S, 30 * S)}, first)
    reporting = get_condition(down.conditions, REPORTING)
    assert reporting is not None and reporting.status == "False" and "n1" in reporting.message
    assert NOT_REPORTING in [e.reason for e in trace_events(first, down)]


def body(name: str, heartbeat: str | None, rv: str, ready_status: str = "True",
         reason: str = "Tracing") -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"conditions": [{
        "type": "Ready", "status": ready_status, "reason": reason,
        "lastTransitionTime": "2026-01-01T11:00:00Z"}]}  # fmt: skip
    if heartbeat:
        status["lastHeartbeatTime"] = heartbeat
    return {"metadata": {"name": name, "generation": 1, "resourceVersion": rv},
            "spec": {}, "status": status}  # fmt: skip


def test_the_runtime_finds_an_agent_silent_one_timeout_after_its_last_new_heartbeat() -> None:
    now = [T0]
    runtime = Runtime(Settings(heartbeat_timeout=TIMEOUT), None, clock=lambda: now[0])
    runtime.nodetracer_seen(body("n1", "2026-01-01T12:00:00Z", "10"))
    runtime.nodetracer_seen(body("n2", "2026-01-01T12:00:00Z", "11"))
    assert node_report(body("n1", "2026-01-01T12:00:00Z", "10")).version == "10"
    now[0] = T0 + 6 * S
    runtime.nodetracer_seen(body("n2", "2026-01-01T12:00:06Z", "12"))  # n2 reports again
    runtime.nodetracer_seen(body("n1", "2026-01-01T12:00:00Z", "13",
                                 "Unknown", STALE))  # not a heartbeat  # fmt: skip
    now[0] = T0 + TIMEOUT
    assert set(runtime.silent()) == {"n1"}
    assert runtime.silent()["n1"].for_ == TIMEOUT
    now[0] = T0 + 16 * S
    assert set(runtime.silent()) == {"n1", "n2"}
    runtime.nodetracer_seen(body("n1", "2026-01-01T12:00:16Z", "14"))  # back
    assert set(runtime.silent()) == {"n2"}
    runtime.nodetracer_gone(body("n2", None, "15"))
    assert runtime.silent() == {}
