"""TracingPolicy status from the compile result and the agents' reports, and
the Events its transitions raise. Pure.

- `Valid`: whether the policy compiled; the message names the field when not.
- `Ready`: every node with a target runs the policy's current generation, and
  applies it to every container it selects there.
- `Applied`: False when an agent could not apply the policy to some container
  (LimitExceeded, CapacityExceeded, ApplyFailed), with a Warning Event (applied.py).
- `Reporting`: False, naming the nodes, while the agent of a node with a target or
  counts of the policy sends no heartbeat (heartbeats.py); such a node is not ready.
- nodes ready/total, matched containers, rule matches summed over all nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from podtrace_api.conditions import get_condition, set_condition
from podtrace_api.tracingpolicy import RuleCount, TracingPolicyStatus

from .applied import applied_condition, applied_events
from .events import EventSpec, EventType, validity_events
from .heartbeats import (
    NOT_REPORTING,
    Silence,
    names,
    reporting_condition,
    reporting_events,
    silent_among,
)
from .reports import NodeReport
from .validation import Problem, summary

MAX_RULE_COUNTS = 32

# Ready condition reasons.
APPLIED = "Applied"
WAITING = "WaitingForAgents"
NO_TARGETS = "NoMatchingContainers"
INVALID = "Invalid"
ACCEPTED = "Accepted"


def policy_status(
    *,
    generation: int,
    problems: Iterable[Problem],
    placement: Mapping[str, int],
    reports: Mapping[str, NodeReport],
    rules: Mapping[str, int],
    source_id: str,
    old: TracingPolicyStatus | None,
    now: datetime,
    silent: Mapping[str, Silence] | None = None,
    left_out: Mapping[str, int] | None = None,
) -> TracingPolicyStatus:
    """The status a TracingPolicy should have now.

    `placement` is node → containers selected there (from the compile step);
    `reports` the NodeTracers by node name; `rules` the rule matches counted so far
    (the ledger's total: live targets plus those gone); `left_out` node → containers the
    compile step could not fit in that node's spec; `silent` the nodes whose
    agent sends no heartbeat.
    """
    problems = list(problems)
    silent = silent or {}
    conditions = list(old.conditions) if old else []
    left_out = left_out or {}
    total = len(set(placement) | set(left_out))
    ready = sum(
        1
        for node in placement
        if node in reports and reports[node].ready_for(source_id, generation)
        and reports[node].short_of(source_id) is None and node not in silent
        and node not in left_out
    )
    counted_on = set(placement) | {n for n, r in reports.items() if source_id in r.sources}
    quiet = silent_among(placement, silent)
    matched = sum(placement.values()) + sum(left_out.values())
    if problems:
        conditions = set_condition(
            conditions, "Valid", False, INVALID, summary(problems), now, generation
        )
        conditions = set_condition(
            conditions, "Ready", False, INVALID, "the policy is not valid", now, generation
        )
    else:
        conditions = set_condition(
            conditions, "Valid", True, ACCEPTED, "the policy compiled", now, generation
        )
        conditions = applied_condition(conditions, source_id, placement, reports, now, generation,
                                       left_out)
        conditions = reporting_condition(conditions, counted_on, silent, now, generation)
        applied = get_condition(conditions, "Applied")
        if total == 0:
            reason, message, ok = NO_TARGETS, "no running container matches the selector", False
        elif quiet:
            reason, ok = NOT_REPORTING, False
            message = (f"applied on {ready} of {total} nodes; no heartbeat from the agent "
                       f"of {names(quiet)}")
        elif applied is not None and applied.status == "False":
            reason, ok = applied.reason, False
            message = f"applied on {ready} of {total} nodes: {applied.message}"
        elif ready < total:
            reason, message, ok = WAITING, f"applied on {ready} of {total} nodes", False
        else:
            reason, message, ok = APPLIED, f"applied on all {total} nodes", True
        conditions = set_condition(conditions, "Ready", ok, reason, message, now, generation)
    counts = {rule: n for rule, n in rules.items() if n}
    return TracingPolicyStatus(
        observed_generation=generation,
        conditions=conditions,
        nodes=f"{ready}/{total}",
        nodes_ready=ready,
        nodes_total=total,
        matched_containers=matched,
        events_total=sum(counts.values()),
        rule_counts=[
            RuleCount(rule=rule, count=count) for rule, count in sorted(counts.items())
        ][:MAX_RULE_COUNTS],
    )


def policy_events(
    old: TracingPolicyStatus | None, new: TracingPolicyStatus
) -> list[EventSpec]:
    """Events for what changed between two statuses (none when nothing did)."""
    old_conditions = old.conditions if old else []
    was_ready = get_condition(old_conditions, "Ready")
    is_ready = get_condition(new.conditions, "Ready")
    events = validity_events(old_conditions, new.conditions, "policy accepted")
    events += applied_events(old_conditions, new.conditions)
    events += reporting_events(old_conditions, new.conditions)
    if is_ready is not None and (was_ready is None or was_ready.reason != is_ready.reason):
        if is_ready.reason == APPLIED:
            events.append(EventSpec(
                EventType.NORMAL, APPLIED,
                f"applied on {new.nodes_total} nodes to {new.matched_containers} containers",
                "Apply",
            ))  # fmt: skip
        elif is_ready.reason == NO_TARGETS:
            events.append(EventSpec(
                EventType.WARNING, "NoMatchingPods",
                "no running container matches the policy's selector", "Compile",
            ))  # fmt: skip
    return events


def stored_rules(status: TracingPolicyStatus | None) -> dict[str, int] | None:
    """The rule matches a stored status counted (to seed the ledger after a restart)."""
    return {c.rule: c.count for c in status.rule_counts} if status else None


def same_status(a: TracingPolicyStatus | None, b: TracingPolicyStatus) -> bool:
    """Equal as stored (conditions keep their transition times, so plain equality works)."""
    return a is not None and a.to_wire() == b.to_wire()
