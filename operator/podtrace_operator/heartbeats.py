"""Whether each node's agent still reports, from its NodeTracer heartbeats. Pure.

Every agent rewrites `status.lastHeartbeatTime` of its NodeTracer at least once per
heartbeat interval (`podtrace-agent run --heartbeat-interval`, default 30s). An agent
that stops (its process hangs or dies and is not restarted, its node is down or cut
off) leaves the NodeTracer as it was: Ready=True and counts that no longer move. As
Kubernetes' node lifecycle controller does for a kubelet's NodeStatus, the operator
watches the heartbeat and, once it has not moved for the heartbeat timeout
(`podtrace-operator --heartbeat-timeout`, default 2m), sets the NodeTracer's Ready
condition Unknown and names the node in the `Reporting` condition of every
TracingPolicy and ContainerTrace with targets or counts there. The agent's next write
sets Ready again; Reporting turns True with it.

Time is the operator's own: a heartbeat counts from when the operator saw it change
(`Seen.at`), not from the timestamp the agent wrote, so clock skew between a node and
the operator never makes an agent look silent or alive. A new writer (after a restart
or Lease takeover) therefore waits one full timeout before calling any agent silent.

    seen = observe(seen, heartbeat, now)            # at each NodeTracer watch event
    quiet = silence(node, seen, now, timeout)       # None while its agent reports
    conditions = ready_unknown(nt_conditions, quiet, timeout, now)    # to write, or None
    conditions = reporting_condition(conditions, nodes, silent_by_node, now, generation)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from podtrace_api.base import Condition, ConditionStatus
from podtrace_api.conditions import get_condition, set_condition

from .events import EventSpec, EventType

READY = "Ready"
REPORTING = "Reporting"  # condition of TracingPolicy and ContainerTrace
STALE = "AgentHeartbeatStale"  # NodeTracer Ready Unknown: it reported, then stopped
NEVER = "AgentNeverReported"  # NodeTracer Ready Unknown: no heartbeat since it exists
NOT_REPORTING = "AgentNotReporting"  # Reporting False; Ready False of policies
ALL_REPORTING = "AgentsReporting"
MAX_NAMED = 10  # nodes named in a message; more are counted


@dataclass(frozen=True)
class Seen:
    """A node's last heartbeat as the operator saw it change."""

    heartbeat: datetime | None  # the agent's lastHeartbeatTime (None: it never wrote one)
    at: datetime  # when the operator saw that value first (its own clock)


@dataclass(frozen=True)
class Silence:
    """An agent that has not reported for longer than the timeout."""

    node: str
    heartbeat: datetime | None  # its last heartbeat, None when it never reported
    for_: timedelta  # how long the operator has seen no new heartbeat


def observe(
    previous: Seen | None,
    heartbeat: datetime | None,
    now: datetime,
    *,
    marked: Sequence[Condition] = (),
    timeout: timedelta = timedelta(0),
) -> Seen:
    """The node's `Seen` after a watch event carrying `heartbeat`: unchanged when the
    heartbeat did not move (another writer's change, e.g. ours, is not a heartbeat).
    A NodeTracer first seen with Ready already set Unknown by an operator (`marked`, its
    conditions) is silent at once: a restarted operator does not wait a timeout again.

    >>> t = datetime(2026, 1, 1)
    >>> observe(Seen(t, t), t, t + timedelta(seconds=9)).at == t
    True
    """
    if previous is not None and previous.heartbeat == heartbeat:
        return previous
    if previous is None and is_marked(marked):
        return Seen(heartbeat, now - timeout)
    return Seen(heartbeat, now)


def is_marked(conditions: Sequence[Condition]) -> bool:
    """Whether Ready says an operator found the agent silent."""
    ready = get_condition(conditions, READY)
    return ready is not None and ready.status == ConditionStatus.UNKNOWN and \
        ready.reason in (STALE, NEVER)


def stale_at(seen: Seen, timeout: timedelta) -> datetime:
    """When the agent counts as silent unless a new heartbeat arrives first."""
    return seen.at + timeout


def silence(node: str, seen: Seen, now: datetime, timeout: timedelta) -> Silence | None:
    """The node's silence, None while its agent reports within `timeout`."""
    if now < stale_at(seen, timeout):
        return None
    return Silence(node, seen.heartbeat, now - seen.at)


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.0f}s"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_unknown(
    conditions: Sequence[Condition], silent: Silence, timeout: timedelta, now: datetime
) -> list[Condition] | None:
    """A silent agent's NodeTracer conditions with Ready Unknown (the others as they
    are: they describe the node as the agent last saw it), or None when Ready already
    says so — then nothing is written."""
    if is_marked(conditions):
        return None
    current = get_condition(conditions, READY)
    if silent.heartbeat is None:
        reason = NEVER
        message = (f"the agent has not reported since the operator saw this NodeTracer "
                   f"{_seconds(silent.for_)} ago (heartbeat timeout {_seconds(timeout)})")
    else:
        reason = STALE
        message = (f"the agent stopped reporting: no heartbeat for {_seconds(silent.for_)} "
                   f"(heartbeat timeout {_seconds(timeout)}; last heartbeat "
                   f"{_stamp(silent.heartbeat)}); its status is as it last wrote it")
    generation = current.observed_generation if current is not None else None
    return set_condition(conditions, READY, ConditionStatus.UNKNOWN, reason, message, now,
                         generation)  # fmt: skip


def silent_among(nodes: Iterable[str], silent: Mapping[str, Silence]) -> list[Silence]:
    """The silent ones of `nodes`, by name."""
    return [silent[n] for n in sorted(set(nodes)) if n in silent]


def names(silences: Sequence[Silence]) -> str:
    """`a, b and 3 more`: the nodes of `silences`, bounded."""
    shown = ", ".join(s.node for s in silences[:MAX_NAMED])
    more = len(silences) - MAX_NAMED
    return f"{shown} and {more} more" if more > 0 else shown


def reporting_condition(
    conditions: Sequence[Condition],
    nodes: Iterable[str],
    silent: Mapping[str, Silence],
    now: datetime,
    generation: int,
) -> list[Condition]:
    """`conditions` with Reporting set: False, naming each node whose agent is silent,
    when one of `nodes` (where the object has targets or counts) is; the message stays
    the same while the silence lasts (it names the last heartbeat, not an age), so a
    silent node costs no status write per reconcile."""
    quiet = silent_among(nodes, silent)
    if not quiet:
        return set_condition(conditions, REPORTING, True, ALL_REPORTING,
                             "the agent of every node with a target reports", now, generation)
    parts = [
        f"{s.node} (last heartbeat {_stamp(s.heartbeat)})" if s.heartbeat is not None
        else f"{s.node} (never reported)" for s in quiet[:MAX_NAMED]
    ]
    more = len(quiet) - MAX_NAMED
    listed = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    message = (f"no heartbeat from the agent of {len(quiet)} node(s): {listed}; their "
               f"targets' state and counts are as last reported and may be stale")
    return set_condition(conditions, REPORTING, False, NOT_REPORTING, message, now, generation)


def reporting_events(old: Sequence[Condition], new: Sequence[Condition]) -> list[EventSpec]:
    """A Warning when Reporting turns False or names other nodes; Normal when it recovers."""
    was, now = get_condition(old, REPORTING), get_condition(new, REPORTING)
    if now is None or (was is not None and (was.status, was.message) == (now.status, now.message)):
        return []
    if now.status == ConditionStatus.FALSE:
        return [EventSpec(EventType.WARNING, NOT_REPORTING, now.message, "Report")]
    if was is not None and was.status == ConditionStatus.FALSE:
        return [EventSpec(EventType.NORMAL, ALL_REPORTING, now.message, "Report")]
    return []
