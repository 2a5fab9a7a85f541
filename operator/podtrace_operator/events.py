"""Kubernetes Events the operator raises, and how repeats are folded.

Which events to raise is decided from status transitions (old status → new
status), so a restarted operator does not repeat what the stored status
already says. What is raised anyway more than once — the same type, reason
and note about the same object — becomes one events.k8s.io/v1 Event with a
growing `series` instead of a new Event each time, as client-go's recorder does.

Exactly once across a crash or a leader change: the writer raises a
transition's Events *before* it writes the status, and each Event carries the
digest of the status the transition left (annotation `podtrace.io/occurrence`).
A replica that died between the two leaves the old status stored; whoever
writes next derives the same transition from it, finds its Events already
carrying that digest, and only writes the status. The series count is read
from the stored Event, not from memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from podtrace_api.base import Condition, ConditionStatus
from podtrace_api.conditions import get_condition
from podtrace_api.observe import EventType

REPORTING_CONTROLLER = "podtrace.io/operator"
OCCURRENCE = "podtrace.io/occurrence"  # annotation: which transition raised it last
MAX_NOTE = 1024  # events.k8s.io/v1 rejects longer notes


@dataclass(frozen=True)
class EventSpec:
    """One Event to raise about the object being reconciled."""

    type: EventType
    reason: str
    note: str
    action: str = "Reconcile"


def validity_events(
    old: Sequence[Condition], new: Sequence[Condition], accepted_note: str
) -> list[EventSpec]:
    """Accepted or Invalid when the Valid condition turns, or stays False for a new reason."""
    was, now = get_condition(old, "Valid"), get_condition(new, "Valid")
    if now is None or not (
        was is None
        or was.status != now.status
        or (now.status == ConditionStatus.FALSE and was.message != now.message)
    ):
        return []
    if now.status == ConditionStatus.TRUE:
        return [EventSpec(EventType.NORMAL, "Accepted", accepted_note, "Compile")]
    return [EventSpec(EventType.WARNING, "Invalid", now.message, "Compile")]


@dataclass(frozen=True)
class ObjectRef:
    """The `regarding` object of an Event."""

    api_version: str
    kind: str
    name: str
    uid: str
    namespace: str | None = None

    @property
    def event_namespace(self) -> str:
        # Events about cluster-scoped objects live in "default" (as for Nodes).
        return self.namespace or "default"

    def wire(self) -> dict[str, Any]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
               "uid": self.uid}  # fmt: skip
        if self.namespace:
            ref["namespace"] = self.namespace
        return ref


def micro_time(when: datetime) -> str:
    """RFC 3339 with microseconds, as MicroTime fields want it."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(ref: ObjectRef, spec: EventSpec) -> str:
    """A stable name per (object, type, reason, note): repeats land on the same Event."""
    digest = hashlib.sha256(
        "\0".join([ref.uid, spec.type, spec.reason, spec.note]).encode()
    ).hexdigest()[:16]
    return f"{ref.name[:200]}.{digest}"


def occurrence(old_status: Mapping[str, Any]) -> str:
    """The key of a status transition: a digest of the stored status it leaves.

    >>> occurrence({"b": 1, "a": [2]}) == occurrence({"a": [2], "b": 1})
    True
    """
    text = json.dumps(old_status, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def raised_by(event: Mapping[str, Any]) -> str | None:
    """The occurrence key a stored Event was last raised for."""
    return ((event.get("metadata") or {}).get("annotations") or {}).get(OCCURRENCE)


def next_count(event: Mapping[str, Any]) -> int:
    """The series count of one more occurrence of a stored Event."""
    return int((event.get("series") or {}).get("count") or 1) + 1


def new_event(
    ref: ObjectRef, spec: EventSpec, now: datetime, instance: str, key: str
) -> dict[str, Any]:
    """The body of a new events.k8s.io/v1 Event raised by the transition `key`."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(ref, spec),
            "namespace": ref.event_namespace,
            "annotations": {OCCURRENCE: key},
        },
        "eventTime": micro_time(now),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": spec.action,
        "reason": spec.reason,
        "note": spec.note[:MAX_NOTE],
        "type": str(spec.type),
        "regarding": ref.wire(),
    }


def series_patch(count: int, now: datetime, key: str) -> dict[str, Any]:
    """The merge patch that records a repeat of an existing Event, raised by `key`."""
    return {
        "metadata": {"annotations": {OCCURRENCE: key}},
        "series": {"count": count, "lastObservedTime": micro_time(now)},
    }
