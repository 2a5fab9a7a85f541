"""Kubernetes Events the operator raises, and how repeats are folded.

Which events to raise is decided from status transitions (old status → new
status), so a restarted operator does not repeat what the stored status
already says. What is raised anyway more than once — the same type, reason
and note about the same object — becomes one events.k8s.io/v1 Event with a
growing `series` instead of a new Event each time, as client-go's recorder does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

REPORTING_CONTROLLER = "podtrace.io/operator"
MAX_NOTE = 1024  # events.k8s.io/v1 rejects longer notes


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class EventSpec:
    """One Event to raise about the object being reconciled."""

    type: EventType
    reason: str
    note: str
    action: str = "Reconcile"


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


@dataclass
class SeriesBook:
    """How often each Event was raised: the count to write on the next repeat."""

    counts: dict[str, int] = field(default_factory=dict)

    def record(self, name: str) -> int:
        """Count one more occurrence; 1 means "create", more means "patch the series"."""
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    def forget(self, name: str) -> None:
        self.counts.pop(name, None)


def new_event(ref: ObjectRef, spec: EventSpec, now: datetime, instance: str) -> dict[str, Any]:
    """The body of a new events.k8s.io/v1 Event."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": event_name(ref, spec), "namespace": ref.event_namespace},
        "eventTime": micro_time(now),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": spec.action,
        "reason": spec.reason,
        "note": spec.note[:MAX_NOTE],
        "type": str(spec.type),
        "regarding": ref.wire(),
    }


def series_patch(count: int, now: datetime) -> dict[str, Any]:
    """The merge patch that records a repeat of an existing Event."""
    return {"series": {"count": count, "lastObservedTime": micro_time(now)}}
