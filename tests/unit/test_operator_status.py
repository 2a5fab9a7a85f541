"""Status of TracingPolicy and ContainerTrace from the compile result and the
agents' reports, the phase machine, and the Events transitions raise."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from podtrace_api.conditions import get_condition
from podtrace_api.containertrace import ContainerTraceSpec, TracePhase
from podtrace_api.syscalls import number_of
from podtrace_api.syscallset import encode
from podtrace_api.tracingpolicy import TracingPolicyStatus
from podtrace_operator.events import EventType
from podtrace_operator.policy_status import policy_events, policy_status
from podtrace_operator.reports import NodeReport, node_report
from podtrace_operator.seccomp import profile, profile_json
from podtrace_operator.tallies import Ledger, Tally
from podtrace_operator.trace_status import TraceInput, trace_events, trace_status
from podtrace_operator.validation import Problem

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SID = "TracingPolicy/shells"
CT = "ContainerTrace/shop/rec"


def nodetracer(name: str, *, generation: int = 3, observed: int | None = 3, ready: bool = True,
               sources: dict[str, int] | None = None,
               targets: list[dict[str, Any]] | None = None,
               results: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """A NodeTracer as its agent reports it: `results` by source id."""
    rows = [{"source": sid, "results": r} for sid, r in (results or {}).items()]
    status: dict[str, Any] = {"targets": targets or [], "sources": rows}
    if observed is not None:
        status["observedGeneration"] = observed
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "reason": "Running",
                                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]  # fmt: skip
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {"sources": [{"id": i, "generation": g} for i, g in (sources or {}).items()]},
        "status": status,
    }


def result(syscalls: dict[str, int] | None = None, **kw: Any) -> dict[str, Any]:
    """A source's results on a node; `syscalls` by name (all listed, all in the set)."""
    out: dict[str, Any] = {"since": "2026-01-01T00:00:00Z", **kw}
    if syscalls:
        out["syscalls"] = [{"name": n, "count": c} for n, c in syscalls.items()]
        out["syscallSet"] = encode(number_of(n) for n in syscalls)
    return out


def target(uid: str, container: str = "app", state: str = "Tracing",
           **kw: Any) -> dict[str, Any]:  # fmt: skip
    return {"podUid": uid, "container": container, "state": state, **kw}


# --- reports ------------------------------------------------------------------------------


def test_node_is_ready_for_a_source_when_its_agent_applied_that_generation() -> None:
    report = node_report(nodetracer("n1", sources={SID: 2}))
    assert report.ready_for(SID, 2) and not report.ready_for(SID, 3)
    assert not node_report(nodetracer("n1", observed=2, sources={SID: 2})).ready_for(SID, 2)
    assert not node_report(nodetracer("n1", ready=False, sources={SID: 2})).ready_for(SID, 2)
    assert not node_report(nodetracer("n1", observed=None, sources={SID: 2})).ready_for(SID, 2)


def test_unreadable_agent_status_counts_as_no_report() -> None:
    body = nodetracer("n1", sources={SID: 1})
    body["status"]["targets"] = "garbage"
    assert node_report(body).targets == () and not node_report(body).applied


# --- TracingPolicy ------------------------------------------------------------------------


def reports(*bodies: dict) -> dict[str, NodeReport]:
    return {b["metadata"]["name"]: node_report(b) for b in bodies}


def tally(nts: dict[str, NodeReport], source: str) -> Tally:
    """What the ledger totals for `source` after seeing these reports."""
    ledger = Ledger()
    for name, report in nts.items():
        ledger.observe(name, report)
    return ledger.total(source)


def test_policy_status_counts_nodes_containers_and_rule_matches() -> None:
    nts = reports(
        nodetracer("n1", sources={SID: 2}, targets=[target("u1"), target("u2")], results={
            SID: result(ruleMatches=[{"rule": "curl", "count": 1}, {"rule": "shell", "count": 3}]),
            "TracingPolicy/other": result(ruleMatches=[{"rule": "shell", "count": 50}]),
        }),
        nodetracer("n2", observed=2, sources={SID: 2}, targets=[target("u3")],
                   results={SID: result(ruleMatches=[{"rule": "shell", "count": 2}])}),
    )  # fmt: skip
    status = policy_status(generation=2, problems=[], placement={"n1": 2, "n2": 1},
                           reports=nts, rules=tally(nts, SID).rules, source_id=SID,
                           old=None, now=T0)  # fmt: skip
    assert (status.nodes, status.nodes_ready, status.nodes_total) == ("1/2", 1, 2)
    assert status.matched_containers == 3 and status.observed_generation == 2
    assert status.events_total == 6
    assert [(c.rule, c.count) for c in status.rule_counts] == [("curl", 1), ("shell", 5)]
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "WaitingForAgents"


def test_invalid_policy_says_why_and_raises_one_warning() -> None:
    problems = [Problem("spec.rules[0].syscalls", "unknown syscall(s) nope")]
    status = policy_status(generation=1, problems=problems, placement={}, reports={}, rules={},
                           source_id=SID, old=None, now=T0)  # fmt: skip
    valid = next(c for c in status.conditions if c.type == "Valid")
    assert valid.status == "False" and "spec.rules[0].syscalls" in valid.message
    events = policy_events(None, status)
    assert [(e.type, e.reason) for e in events] == [(EventType.WARNING, "Invalid")]
    again = policy_status(generation=1, problems=problems, placement={}, reports={}, rules={},
                          source_id=SID, old=status, now=T0 + timedelta(minutes=1))  # fmt: skip
    assert again == status and policy_events(status, again) == []


def test_policy_lifecycle_events_follow_transitions_only() -> None:
    args: dict[str, Any] = {"generation": 1, "problems": [], "source_id": SID, "rules": {}}
    none = policy_status(placement={}, reports={}, old=None, now=T0, **args)
    assert [e.reason for e in policy_events(None, none)] == ["Accepted", "NoMatchingPods"]
    waiting = policy_status(placement={"n1": 1}, reports={}, old=none, now=T0, **args)
    assert policy_events(none, waiting) == []
    nts = reports(nodetracer("n1", sources={SID: 1}))
    applied = policy_status(placement={"n1": 1}, reports=nts, old=waiting, now=T0, **args)
    assert [(e.type, e.reason) for e in policy_events(waiting, applied)] == [
        (EventType.NORMAL, "Applied")
    ]
    # A restarted operator recomputes the same status from the stored one: no events.
    stored = TracingPolicyStatus.model_validate(json.loads(json.dumps(applied.to_wire())))
    again = policy_status(placement={"n1": 1}, reports=nts, old=stored, now=T0 + timedelta(1),
                          **args)  # fmt: skip
    assert again.to_wire() == stored.to_wire() and policy_events(stored, again) == []


# --- ContainerTrace -----------------------------------------------------------------------


def trace_input(spec: dict | None = None, old=None, problems=(), created=T0) -> TraceInput:
    parsed = ContainerTraceSpec.model_validate(spec or {"selector": {}, "duration": "10m"})
    return TraceInput(name="rec", namespace="shop", generation=1, created=created,
                      spec=parsed, problems=tuple(problems), old=old)  # fmt: skip


SELECTED = [("n1", {"podUid": "u1", "container": "app", "pod": "web-1"})]


def run(trace: TraceInput, now: datetime, nts: dict[str, NodeReport] | None = None,
        selected=SELECTED):  # fmt: skip
    return trace_status(trace, source_id=CT, targets=selected, reports=nts or {},
                        tally=tally(nts or {}, CT),
                        arches=["amd64"], now=now, pending_timeout=timedelta(minutes=5),
                        top_n=2)  # fmt: skip


def tracing_report(**result_fields: Any) -> dict[str, NodeReport]:
    return reports(nodetracer("n1", generation=4, observed=4, sources={CT: 1},
                              targets=[target("u1")], results={CT: result(**result_fields)}))


def test_trace_goes_pending_tracing_completed_and_stops_selecting() -> None:
    pending = run(trace_input(), T0)
    assert pending.status.phase == TracePhase.PENDING and pending.active
    assert pending.deadline == T0 + timedelta(minutes=5)
    assert [e.reason for e in trace_events(None, pending.status)] == ["Accepted"]

    nts = tracing_report(syscalls={"read": 10, "write": 5, "openat": 7}, syscallsTotal=22,
                         execs=[{"filename": "/bin/sh", "count": 2}], execsTotal=2)  # fmt: skip
    t1 = T0 + timedelta(minutes=1)
    tracing = run(trace_input(old=pending.status), t1, nts)
    status = tracing.status
    assert status.phase == TracePhase.TRACING and status.start_time == t1
    assert tracing.deadline == t1 + timedelta(minutes=10)
    assert status.syscalls is not None
    assert (status.syscalls.total, status.syscalls.distinct) == (22, 3)
    assert [(s.name, s.count) for s in status.syscalls.top] == [("read", 10), ("openat", 7)]
    assert status.targets[0].state == "Tracing" and status.targets[0].node == "n1"
    assert [e.reason for e in trace_events(pending.status, status)] == ["Tracing"]

    done = run(trace_input(old=status), t1 + timedelta(minutes=10), nts)
    assert done.status.phase == TracePhase.COMPLETED and not done.active
    assert done.status.completion_time == t1 + timedelta(minutes=10)
    (completed,) = trace_events(status, done.status)
    assert completed.reason == "Completed" and "22 syscalls (3 distinct)" in completed.note

    # Completed is final: later reports do not change the results.
    later = run(trace_input(old=done.status), t1 + timedelta(hours=1), tracing_report())
    assert later.status == done.status and not later.active and later.deadline is None


def test_pending_trace_fails_when_nothing_matched_within_the_timeout() -> None:
    pending = run(trace_input(), T0, selected=[])
    failed = run(trace_input(old=pending.status), T0 + timedelta(minutes=5), selected=[])
    assert failed.status.phase == TracePhase.FAILED and not failed.active
    assert failed.status.message == "no running pod matched the selector within 5m"
    (event,) = trace_events(pending.status, failed.status)
    assert (event.type, event.reason) == (EventType.WARNING, "NoMatchingPods")


def test_selected_but_never_traced_fails_with_its_own_reason() -> None:
    pending = run(trace_input(), T0)
    failed = run(trace_input(old=pending.status), T0 + timedelta(minutes=6))
    assert failed.status.phase == TracePhase.FAILED
    assert failed.status.message == (
        "1 containers selected but no node agent traced them within 5m"
    )
    assert [e.reason for e in trace_events(pending.status, failed.status)] == ["NotTraced"]


def test_invalid_trace_fails_and_starts_over_once_fixed() -> None:
    problems = [Problem("spec.duration", "must be longer than 0s")]
    invalid = run(trace_input(problems=problems), T0)
    assert invalid.status.phase == TracePhase.FAILED and not invalid.active
    assert [e.reason for e in trace_events(None, invalid.status)] == ["Invalid"]
    fixed = run(trace_input(old=invalid.status), T0 + timedelta(minutes=1))
    assert fixed.status.phase == TracePhase.PENDING and fixed.active
    # The pending timeout counts from when the trace became valid.
    assert fixed.deadline == T0 + timedelta(minutes=6)


def test_execs_merge_across_nodes_by_filename() -> None:
    early, late = "2026-01-01T00:00:01Z", "2026-01-01T00:00:09Z"
    nts = reports(
        nodetracer("n1", sources={CT: 1}, targets=[target("u1")], results={CT: result(
            execs=[{"filename": "/bin/sh", "count": 2, "container": "a", "firstSeen": late}],
            execsTotal=2)}),
        nodetracer("n2", sources={CT: 1}, targets=[target("u2")], results={CT: result(
            execs=[{"filename": "/bin/sh", "count": 1, "container": "b", "firstSeen": early},
                   {"filename": "/bin/ls", "count": 5, "container": "b"}],
            execsTotal=9, execsOmitted=3)}),
    )  # fmt: skip
    out = run(trace_input(), T0, nts).status
    assert out.execs_total == 11 and out.execs_omitted == 3  # execs of programs not listed
    assert [(e.filename, e.count, e.container) for e in out.execs] == [
        ("/bin/ls", 5, "b"), ("/bin/sh", 3, "b")]  # fmt: skip


def test_seccomp_profile_format() -> None:
    assert profile(["write", "read", "read"], "SCMP_ACT_ERRNO", ["amd64"]) == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}],
    }
    mixed = profile(["read"], "SCMP_ACT_LOG", ["arm64", "amd64"])["architectures"]
    assert mixed == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                     "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]  # fmt: skip
    assert profile_json(["b", "a"], "SCMP_ACT_ERRNO", []) == profile_json(
        ["a", "b"], "SCMP_ACT_ERRNO", ["amd64"])


def test_lost_events_mark_the_trace_and_its_profile_incomplete() -> None:
    spec = {"selector": {}, "seccompProfile": {"defaultAction": "SCMP_ACT_ERRNO"}}
    whole = run(trace_input(spec), T0, tracing_report(syscalls={"read": 4})).status
    assert get_condition(whole.conditions, "Complete").status == "True"
    assert get_condition(whole.conditions, "ProfileComplete").status == "True"
    nts = reports(nodetracer("n1", generation=4, observed=4, sources={CT: 1},
                             targets=[target("u1", eventsLost=9)],
                             results={CT: result(syscalls={"read": 4}, eventsLost=9)}))
    out = run(trace_input(spec, old=whole), T0 + timedelta(minutes=1), nts).status
    complete = get_condition(out.conditions, "Complete")
    assert (complete.status, complete.reason) == ("False", "EventsLost")
    assert "lost 9 events" in complete.message and "node n1" in complete.message
    profile_ok = get_condition(out.conditions, "ProfileComplete")
    assert (profile_ok.status, profile_ok.reason) == ("False", "EventsLost")
    assert "may be too strict" in profile_ok.message
    assert out.events_lost == 9 and out.targets[0].events_lost == 9
    warnings = [(e.type, e.reason) for e in trace_events(whole, out) if e.reason == "EventsLost"]
    assert warnings == [(EventType.WARNING, "EventsLost")]
    # Without a profile requested there is no profile condition.
    plain_trace = run(trace_input(), T0, nts).status
    assert get_condition(plain_trace.conditions, "ProfileComplete") is None


def test_targets_show_the_reason_in_words_and_the_pod_s_image() -> None:
    nts = reports(nodetracer("n1", generation=4, observed=4, sources={CT: 1},
                             targets=[target("u1", state="Pending", reason="NotStarted")]))
    out = trace_status(trace_input(), source_id=CT, targets=SELECTED, reports=nts,
                       tally=Tally(), arches=["amd64"], now=T0,
                       pending_timeout=timedelta(minutes=5), top_n=2,
                       image_of=lambda uid, c: f"img-of-{uid}-{c}").status
    [t] = out.targets
    assert (t.state, t.message, t.image) == ("Pending", "the container has not started yet",
                                             "img-of-u1-app")
