"""A source an agent could not apply shows in its own status (the Applied
condition and a Warning Event) and nowhere else: the other policies on the same
node stay Ready. Issue 10, parts 1 and 2."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_operator_status import CT, SID, T0, nodetracer, reports, run, target, trace_input

from podtrace_api.budget import plain
from podtrace_api.conditions import get_condition
from podtrace_operator.events import EventType
from podtrace_operator.policy_status import policy_events, policy_status
from podtrace_operator.trace_status import trace_events

OTHER = "TracingPolicy/fine"


def _row(source: str, targets: int, not_applied: int = 0, reason: str | None = None,
         message: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"source": source, "targets": targets,
                           "applied": targets - not_applied, "notApplied": not_applied}
    if reason:
        row |= {"reason": reason, "message": message}
    return row


def _node_with(rows: list[dict[str, Any]], targets: list[dict[str, Any]],
               not_applied: list[dict[str, Any]] = ()) -> dict[str, Any]:  # fmt: skip
    body = nodetracer("n1", sources={SID: 1, OTHER: 1, CT: 1}, targets=targets)
    body["status"]["sources"] = rows
    body["status"]["notApplied"] = list(not_applied)
    return body


def _refused(uid: str, source: str, reason: str, message: str) -> dict[str, Any]:
    return {"podUid": uid, "container": "app", "source": source, "reason": reason,
            "message": message}


def _policy(sid: str, nts: dict, old=None, now=T0):
    return policy_status(generation=1, problems=[], placement={"n1": 1}, reports=nts, rules={},
                         source_id=sid, old=old, now=now)


def test_the_policy_that_does_not_fit_says_so_and_the_others_stay_ready() -> None:
    why = "open path prefix /ééééééééé… is 81 bytes long; the kernel side compares at most 64"
    nts = reports(_node_with(
        [_row(SID, 1, 1, "LimitExceeded", f"ns/p web: {why}"), _row(OTHER, 1)],
        [target("u1", notApplied=["LimitExceeded"])],
        [_refused("u1", SID, "LimitExceeded", why)],
    ))
    bad, fine = _policy(SID, nts), _policy(OTHER, nts)

    applied = get_condition(bad.conditions, "Applied")
    assert (applied.status, applied.reason) == ("False", "LimitExceeded")
    assert "node n1: not applied to 1 of 1 containers" in applied.message
    assert plain(why) in applied.message  # status text is plain ASCII: the rest %-escaped
    ready = get_condition(bad.conditions, "Ready")
    assert (ready.status, ready.reason, bad.nodes) == ("False", "LimitExceeded", "0/1")
    assert [(e.type, e.reason) for e in policy_events(None, bad)] == [
        (EventType.NORMAL, "Accepted"), (EventType.WARNING, "LimitExceeded")]
    assert policy_events(bad, _policy(SID, nts, old=bad, now=T0 + timedelta(1))) == []

    assert fine.nodes == "1/1" and get_condition(fine.conditions, "Ready").status == "True"
    assert get_condition(fine.conditions, "Applied").status == "True"


def test_capacity_is_named_first_and_recovery_is_announced() -> None:
    full = reports(_node_with([_row(SID, 3, 2, "CapacityExceeded", "traced map full")], []))
    short = _policy(SID, full)
    assert get_condition(short.conditions, "Applied").reason == "CapacityExceeded"
    healed = _policy(SID, reports(_node_with([_row(SID, 3)], [])), old=short)
    assert get_condition(healed.conditions, "Ready").status == "True"
    assert [(e.type, e.reason) for e in policy_events(short, healed)] == [
        (EventType.NORMAL, "AppliedEverywhere"), (EventType.NORMAL, "Applied")]


def test_a_trace_target_refused_for_capacity_is_pending_with_the_reason() -> None:
    nts = reports(_node_with(
        [_row(CT, 1, 1, "CapacityExceeded", "ns/p web: 2 of 2 prefix entries used")],
        [target("u1", notApplied=["CapacityExceeded"])],
        [_refused("u1", CT, "CapacityExceeded", "2 of 2 prefix entries used")],
    ))
    out = run(trace_input(), T0, nts).status
    assert out.phase == "Pending"  # the node traces u1 for another source, not for this trace
    [t] = out.targets
    assert (t.state, t.since) == ("Pending", None)
    assert t.message == "CapacityExceeded: 2 of 2 prefix entries used"
    applied = get_condition(out.conditions, "Applied")
    assert (applied.status, applied.reason) == ("False", "CapacityExceeded")
    warnings = [e for e in trace_events(None, out) if e.type == EventType.WARNING]
    assert [e.reason for e in warnings] == ["CapacityExceeded"]


def test_a_policy_left_out_of_a_full_node_spec_is_not_ready_there() -> None:
    # The compile step cut it from n1's spec (byte budget): no placement there, yet the
    # node counts and the policy says why, with a Warning; the other policy is Ready.
    nts = reports(_node_with([_row(OTHER, 1)], [target("u1")]))
    cut = policy_status(generation=1, problems=[], placement={}, reports=nts, rules={},
                        source_id=SID, old=None, now=T0, left_out={"n1": 4})
    applied = get_condition(cut.conditions, "Applied")
    assert (applied.status, applied.reason) == ("False", "NodeSpecFull")
    assert "node n1: 4 containers left out of the node's NodeTracer spec" in applied.message
    ready = get_condition(cut.conditions, "Ready")
    assert (ready.status, ready.reason) == ("False", "NodeSpecFull")
    assert (cut.nodes, cut.matched_containers) == ("0/1", 4)
    assert (EventType.WARNING, "NodeSpecFull") in [(e.type, e.reason)
                                                   for e in policy_events(None, cut)]
    assert get_condition(_policy(OTHER, nts).conditions, "Ready").status == "True"
