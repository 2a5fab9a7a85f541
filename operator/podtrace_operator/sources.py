"""TracingPolicies and ContainerTraces as compile inputs ("sources"): their
selectors compiled once, what they observe, their rules, and whether they are
valid and still active.

A ContainerTrace is pinned to its own namespace here, once: the compile step
never looks at a trace's selector without that namespace restriction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from podtrace_api.containertrace import ContainerTraceSpec
from podtrace_api.nodeconfig import source_id
from podtrace_api.nodetracer import SourceKind, TraceSource
from podtrace_api.observe import ObserveSpec, Rule
from podtrace_api.tracingpolicy import TracingPolicySpec

from .selectors import MATCH_ALL, Selector, compile_selector
from .validation import Problem, check_policy, check_trace


@dataclass(frozen=True)
class Source:
    """A policy or trace, ready to be matched against pods."""

    id: str
    kind: SourceKind
    name: str
    namespace: str | None = None  # ContainerTrace: the only namespace it may select in
    generation: int = 0
    observe: ObserveSpec = field(default_factory=ObserveSpec)
    rules: tuple[Rule, ...] = ()
    pod_selector: Selector = MATCH_ALL
    namespace_selector: Selector = MATCH_ALL
    node_selector: Selector = MATCH_ALL
    containers: frozenset[str] = frozenset()  # empty: every container of the pod
    active: bool = True  # False once a ContainerTrace completed or failed
    profile: bool = False  # a ContainerTrace that builds a seccomp profile

    def selects_container(self, container: str) -> bool:
        return not self.containers or container in self.containers

    @cached_property
    def wire_bytes(self) -> int:
        """The size of `wire` as the apiserver stores it (JSON, no spaces)."""
        return len(json.dumps(self.wire, separators=(",", ":")))

    @cached_property
    def wire(self) -> dict[str, Any]:
        """The TraceSource entry of NodeTracer.spec, as the apiserver stores it."""
        return TraceSource(
            id=self.id,
            kind=self.kind,
            name=self.name,
            namespace=self.namespace,
            generation=self.generation,
            observe=self.observe,
            rules=list(self.rules),
            profile=self.profile,
        ).to_wire()


@dataclass(frozen=True)
class Parsed:
    """A source, or why it cannot be compiled."""

    id: str
    source: Source | None
    problems: tuple[Problem, ...] = ()

    @property
    def valid(self) -> bool:
        return self.source is not None


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _schema_problems(err: ValidationError) -> tuple[Problem, ...]:
    # Only reachable when the stored object does not fit the model (CRD drift).
    return tuple(
        Problem("spec." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in err.errors()
    )


def parse_policy(body: Mapping[str, Any]) -> Parsed:
    """A TracingPolicy body as a Source, or the problems that keep it out."""
    meta = _meta(body)
    sid = source_id(SourceKind.TRACING_POLICY, meta["name"])
    try:
        spec = TracingPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return Parsed(sid, None, _schema_problems(err))
    problems = check_policy(spec)
    if problems:
        return Parsed(sid, None, tuple(problems))
    sel = spec.selector
    return Parsed(
        sid,
        Source(
            id=sid,
            kind=SourceKind.TRACING_POLICY,
            name=meta["name"],
            generation=int(meta.get("generation") or 0),
            observe=spec.observe,
            rules=tuple(spec.rules),
            pod_selector=compile_selector(sel.pod_selector),
            namespace_selector=compile_selector(sel.namespace_selector),
            node_selector=compile_selector(sel.node_selector),
            containers=frozenset(sel.containers),
        ),
    )


def parse_trace(body: Mapping[str, Any], *, active: bool = True) -> Parsed:
    """A ContainerTrace body as a Source restricted to its own namespace."""
    meta = _meta(body)
    sid = source_id(SourceKind.CONTAINER_TRACE, meta["name"], meta["namespace"])
    try:
        spec = ContainerTraceSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return Parsed(sid, None, _schema_problems(err))
    problems = check_trace(spec)
    if problems:
        return Parsed(sid, None, tuple(problems))
    return Parsed(
        sid,
        Source(
            id=sid,
            kind=SourceKind.CONTAINER_TRACE,
            name=meta["name"],
            namespace=meta["namespace"],
            generation=int(meta.get("generation") or 0),
            observe=spec.observe,
            pod_selector=compile_selector(spec.selector),
            containers=frozenset([spec.container]) if spec.container else frozenset(),
            active=active,
            profile=spec.seccomp_profile is not None,
        ),
    )
