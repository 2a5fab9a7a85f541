"""Whether the agents apply a policy or trace to every container it selects: the
`Applied` condition of TracingPolicy and ContainerTrace status and its Warning
Event. Pure.

An agent that cannot apply a source to a container (it asks more than the
kernel side can do, or a node table is full) keeps tracing everything else and
says so in its NodeTracer status (`sources[]`, `targets[].notApplied`); this
module turns those rows into the condition the object's owner reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from podtrace_api.base import Condition, ConditionStatus
from podtrace_api.budget import MAX_NODE_SOURCES, MAX_NODE_TARGETS, SPEC_BUDGET_BYTES
from podtrace_api.conditions import get_condition, set_condition
from podtrace_api.limits import NotAppliedReason

from .events import EventSpec, EventType
from .reports import NodeReport

APPLIED = "Applied"


NODE_SPEC_FULL = "NodeSpecFull"


def left_out_message(left_out: Mapping[str, int]) -> str:
    """What the compile step left out of which node's spec.

    >>> left_out_message({"n1": 3})[:60]
    "node n1: 3 containers left out of the node's NodeTracer spec"
    """
    return "; ".join(
        f"node {node}: {n} containers left out of the node's NodeTracer spec, which holds "
        f"{MAX_NODE_SOURCES} sources, {MAX_NODE_TARGETS} containers and "
        f"{SPEC_BUDGET_BYTES // 1024} KiB at most (the largest sources are left out first)"
        for node, n in sorted(left_out.items()))


def applied_condition(
    conditions: Sequence[Condition],
    source_id: str,
    nodes: Iterable[str],
    reports: Mapping[str, NodeReport],
    now: datetime,
    generation: int,
    left_out: Mapping[str, int] | None = None,
) -> list[Condition]:
    """`conditions` with Applied set from the agents of `nodes`: False, with the reason
    (CapacityExceeded first) and each node's account, when one of them did not apply
    the source to some container; False with reason NodeSpecFull when the compile step
    left some of its containers out of a node's spec (`left_out`: node → how many)."""
    if left_out:
        return set_condition(conditions, APPLIED, False, NODE_SPEC_FULL,
                             left_out_message(left_out), now, generation)
    short = [(node, row) for node in sorted(set(nodes))
             if node in reports and (row := reports[node].short_of(source_id)) is not None]
    if not short:
        return set_condition(conditions, APPLIED, True, APPLIED,
                             "the agents apply it to every container they trace", now, generation)
    reasons = [row.reason for _, row in short if row.reason]
    reason = NotAppliedReason.APPLY_FAILED
    if NotAppliedReason.CAPACITY_EXCEEDED in reasons:
        reason = NotAppliedReason.CAPACITY_EXCEEDED
    elif reasons:
        reason = NotAppliedReason(reasons[0])
    message = "; ".join(
        f"node {node}: not applied to {row.not_applied} of {row.targets} containers "
        f"({row.reason}: {row.message})" for node, row in short
    )
    return set_condition(conditions, APPLIED, False, reason.value, message, now, generation)


def applied_events(old: Sequence[Condition], new: Sequence[Condition]) -> list[EventSpec]:
    """A Warning when Applied turns False or changes its reason; Normal when it recovers."""
    was, now = get_condition(old, APPLIED), get_condition(new, APPLIED)
    if now is None or (was is not None and (was.status, was.reason) == (now.status, now.reason)):
        return []
    if now.status == ConditionStatus.FALSE:
        return [EventSpec(EventType.WARNING, now.reason, now.message, "Apply")]
    if was is not None and was.status == ConditionStatus.FALSE:
        return [EventSpec(EventType.NORMAL, "AppliedEverywhere", now.message, "Apply")]
    return []


def is_applied(conditions: Sequence[Condition]) -> bool:
    found = get_condition(conditions, APPLIED)
    return found is None or found.status == ConditionStatus.TRUE
