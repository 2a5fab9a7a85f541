"""NodeTracer objects as the operator reads them: which source generations the
stored spec carries, whether the node's agent applied that spec, each target's
state and each source's results as the agent reported them. Agents write only
their own NodeTracer status; everything the operator shows in TracingPolicy and
ContainerTrace status is merged from these reports."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from podtrace_api.base import Condition
from podtrace_api.conditions import is_true
from podtrace_api.nodetracer import (
    NodeTargetStatus,
    NodeTracerStatus,
    NotApplied,
    SeccompInstallStatus,
    SourceApplyStatus,
    SourceResult,
    TargetProfile,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeReport:
    """One NodeTracer: what its spec asks (source id → generation) and what its agent says."""

    name: str
    generation: int = 0
    spec_sources: Mapping[str, int] = field(default_factory=dict)
    applied: bool = False  # agent observed this generation and is Ready
    targets: tuple[NodeTargetStatus, ...] = ()
    sources: Mapping[str, SourceApplyStatus] = field(default_factory=dict)  # how each is applied
    # (pod UID, container, source) → why that source is not applied to that container
    not_applied: Mapping[tuple[str, str, str], NotApplied] = field(default_factory=dict)
    profiles: tuple[TargetProfile, ...] = ()  # targets' workload syscalls (profiles.py)
    profiles_omitted: int = 0
    installs: SeccompInstallStatus | None = None  # profiles the agent installed (installs.py)
    heartbeat: datetime | None = None  # the agent's lastHeartbeatTime (heartbeats.py)
    conditions: tuple[Condition, ...] = ()  # as stored (the operator may set Ready Unknown)
    version: str = ""  # resourceVersion: a write of Ready Unknown is conditional on it

    def ready_for(self, source_id: str, generation: int) -> bool:
        """Whether the agent runs `source_id` at `generation` (or later)."""
        return self.applied and self.spec_sources.get(source_id, -1) >= generation

    def short_of(self, source_id: str) -> SourceApplyStatus | None:
        """The source's row when the agent did not apply it to some container."""
        row = self.sources.get(source_id)
        return row if row is not None and row.not_applied else None

    def results_for(self, source_id: str) -> SourceResult | None:
        """What the source's containers on this node did, as its agent counted it."""
        row = self.sources.get(source_id)
        return row.results if row is not None else None

    def with_results(self) -> Iterator[tuple[str, SourceResult]]:
        """Every source this node reports results for."""
        for sid, row in self.sources.items():
            if row.results is not None:
                yield sid, row.results

    def target(self, pod_uid: str, container: str) -> NodeTargetStatus | None:
        return next((t for t in self.targets
                     if t.pod_uid == pod_uid and t.container == container), None)


def node_report(body: Mapping[str, Any]) -> NodeReport:
    """Read a NodeTracer body; an unreadable status counts as no report."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name", ""))
    generation = int(meta.get("generation") or 0)
    sources = (body.get("spec") or {}).get("sources") or []
    spec_sources = {s["id"]: int(s.get("generation") or 0) for s in sources}
    try:
        status = NodeTracerStatus.model_validate(body.get("status") or {})
    except ValidationError as err:
        logger.warning("NodeTracer %s: unreadable status ignored: %s", name, err)
        status = NodeTracerStatus()
    applied = (status.observed_generation or 0) >= generation and is_true(
        status.conditions, "Ready"
    )
    return NodeReport(
        name=name,
        generation=generation,
        spec_sources=spec_sources,
        applied=applied,
        targets=tuple(status.targets),
        sources={row.source: row for row in status.sources},
        not_applied={(n.pod_uid, n.container, n.source): n for n in status.not_applied},
        profiles=tuple(status.profiles),
        profiles_omitted=status.profiles_omitted,
        installs=status.seccomp_profiles,
        heartbeat=status.last_heartbeat_time,
        conditions=tuple(status.conditions),
        version=str(meta.get("resourceVersion") or ""),
    )

