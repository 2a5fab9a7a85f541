"""Prometheus metrics of the agent (`/metrics`, served by `serving.py`)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodetracer import NodeTargetStatus


class AgentMetrics:
    """The agent's metrics, in their own registry (no global state)."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"node": node}
        self._node = labels
        self.events = Counter(
            "podtrace_events", "Events received from the kernel, by type.",
            ["node", "type"], registry=self.registry,
        )
        self.dropped = Gauge(
            "podtrace_events_dropped", "Events lost because a kernel buffer was full.",
            ["node"], registry=self.registry,
        )
        self.traced = Gauge(
            "podtrace_traced_containers", "Containers traced now.",
            ["node"], registry=self.registry,
        )
        self.map_used = Gauge(
            "podtrace_bpf_map_entries", "Entries in use per BPF map.",
            ["node", "map"], registry=self.registry,
        )
        self.map_capacity = Gauge(
            "podtrace_bpf_map_capacity", "Maximum entries per BPF map.",
            ["node", "map"], registry=self.registry,
        )
        self.rule_matches = Counter(
            "podtrace_rule_matches", "Rule matches, by source and rule.",
            ["node", "source", "rule"], registry=self.registry,
        )
        self.not_applied = Gauge(
            "podtrace_targets_not_applied",
            "Targets with at least one source not applied, by reason (CapacityExceeded: a "
            "table is full).", ["node", "reason"], registry=self.registry,
        )
        self.runtime_up = Gauge(
            "podtrace_runtime_reachable",
            "1 while the container runtime answers CRI calls, 0 while it does not.",
            ["node"], registry=self.registry,
        )
        self.api_errors = Counter(
            "podtrace_api_write_errors", "Failed writes to the Kubernetes API, by what.",
            ["node", "what"], registry=self.registry,
        )

    def event(self, kind: str) -> None:
        self.events.labels(type=kind, **self._node).inc()

    def api_error(self, what: str) -> None:
        self.api_errors.labels(what=what, **self._node).inc()

    def set_runtime(self, reachable: bool) -> None:
        self.runtime_up.labels(**self._node).set(1 if reachable else 0)

    def rule_match(self, source: str, rule: str, count: int = 1) -> None:
        self.rule_matches.labels(source=source, rule=rule, **self._node).inc(count)

    def set_state(self, traced: int, dropped: int, maps: list[tuple[str, int, int]]) -> None:
        self.traced.labels(**self._node).set(traced)
        self.dropped.labels(**self._node).set(dropped)
        for name, used, capacity in maps:
            self.map_used.labels(map=name, **self._node).set(used)
            self.map_capacity.labels(map=name, **self._node).set(capacity)

    def set_not_applied(self, targets: Iterable[NodeTargetStatus]) -> None:
        """Targets per reason one of their sources is not applied for (each counted once)."""
        by_reason = Tally(
            reason for t in targets for reason in set(t.not_applied)
        )
        for reason in NotAppliedReason:
            self.not_applied.labels(reason=reason.value, **self._node).set(by_reason[reason])
