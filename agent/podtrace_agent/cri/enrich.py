"""Container ID → pod, namespace, container, image, over CRI, cached; the cgroup
path's identity, marked as such, when the runtime cannot answer.

    enricher = Enricher.from_report(discover_runtime(endpoints, host_root))
    e = enricher.lookup(container_id, cgroup_path="/kubepods/besteffort/pod<uid>/<id>")
    e.source      # IdentitySource.CRI, or CGROUP_PATH with e.reason saying why
    e.pod_name, e.namespace, e.container_name, e.image, e.sandbox, e.pid, ...

A container's identity never changes while its ID lives, so answers from CRI are
kept (bounded LRU) until `forget` (its cgroup went away) or eviction. A miss asks
the runtime: ContainerStatus, then PodSandboxStatus (a sandbox's "pause"
container has a cgroup too). An ID the runtime does not know is asked about
again after 0.25 s, then after twice as long each time, up to `negative_ttl`
seconds: a burst of events from one unknown cgroup costs a few pairs of calls,
while a cgroup seen before its runtime registered it (containerd creates a
sandbox's cgroup before RunPodSandbox returns) is named soon after. When the
runtime is unreachable, calls stop for `retry_interval` seconds; until then
every miss gets the cgroup-path identity with the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import api_pb2
from .cache import LRU
from .client import CRIClient
from .container import (
    Enrichment,
    PathIdentity,
    from_container_status,
    from_path_identity,
    from_sandbox_status,
)
from .endpoints import RuntimeReport
from .errors import CallTimeout, CRIError, NotFound, RuntimeUnavailable

DEFAULT_CAPACITY = 4096
DEFAULT_NEGATIVE_TTL_S = 5.0
FIRST_RETRY_S = 0.25
DEFAULT_RETRY_INTERVAL_S = 1.0


@dataclass(frozen=True)
class _Miss:
    """Why CRI had no answer for an ID, when to ask again, and how often it missed."""

    reason: str
    retry_at: float
    misses: int


class StatusSource(Protocol):
    """The two CRI calls enrichment needs (CRIClient is one)."""

    endpoint: str

    def container_status(self, container_id: str) -> api_pb2.ContainerStatusResponse: ...

    def pod_sandbox_status(self, sandbox_id: str) -> api_pb2.PodSandboxStatusResponse: ...


PathParser = Callable[[str], PathIdentity | None]


def _default_path_parser() -> PathParser:
    from podtrace_agent.identity import parse

    return parse


class Enricher:
    """Looks containers up by ID; safe to call from several threads."""

    def __init__(
        self,
        runtime: StatusSource | None,
        *,
        unavailable_reason: str = "no CRI runtime endpoint",
        parse_path: PathParser | None = None,
        capacity: int = DEFAULT_CAPACITY,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL_S,
        retry_interval: float = DEFAULT_RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._unavailable_reason = unavailable_reason
        self._parse_path = parse_path or _default_path_parser()
        self._known: LRU[str, Enrichment] = LRU(capacity)
        self._unknown: LRU[str, _Miss] = LRU(capacity)
        self._negative_ttl = negative_ttl
        self._retry_interval = retry_interval
        self._clock = clock
        self._down_until = float("-inf")
        self._down_reason = ""
        self._lock = threading.Lock()
        self.calls = 0  # CRI calls made, for tests and metrics

    @classmethod
    def from_report(cls, report: RuntimeReport, **kwargs: Any) -> Enricher:
        """An enricher over the runtime discovery chose, or path identity only (with
        the discovery message as the reason) when it found none."""
        if not report.found:
            return cls(None, unavailable_reason=report.message, **kwargs)
        return cls(CRIClient(report.endpoint), **kwargs)

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> Enrichment:
        """Who the container (or pod sandbox) with this ID is. `cgroup_path` is used
        only when CRI cannot answer: its pod UID and container ID are then returned."""
        with self._lock:
            now = self._clock()
            known = self._known.get(container_id, now)
            if known is not None:
                return known
            miss = self._unknown.get(container_id)
            if miss is not None and now < miss.retry_at:
                reason = miss.reason
            else:
                answer = self._ask_runtime(container_id, now, miss)
                if isinstance(answer, Enrichment):
                    return answer
                reason = answer
        identity = self._parse_path(cgroup_path) if cgroup_path else None
        return from_path_identity(container_id, identity, cgroup_path, reason)

    def attach(self, report: RuntimeReport) -> None:
        """Ask the runtime `report` names from now on: one that answered only after the
        agent started without one (what was named from cgroup paths meanwhile is asked
        about again by the core's resync)."""
        with self._lock:
            if self._runtime is None and report.found:
                self._runtime = CRIClient(report.endpoint)

    @property
    def asks_runtime(self) -> bool:
        """Whether a lookup may call the runtime (and wait on it): False when discovery
        found none, then every answer is the cgroup path's, at once."""
        return self._runtime is not None

    def forget(self, container_id: str) -> None:
        """Drop what is known about a container (call when its cgroup is removed)."""
        with self._lock:
            self._known.pop(container_id)
            self._unknown.pop(container_id)

    def close(self) -> None:
        close = getattr(self._runtime, "close", None)
        if close is not None:
            close()

    # --- the runtime ---------------------------------------------------------------------------

    def _ask_runtime(self, container_id: str, now: float, miss: _Miss | None) -> Enrichment | str:
        """The enrichment from CRI (cached), or why there is none."""
        if self._runtime is None:
            return self._unavailable_reason
        if now < self._down_until:
            return self._down_reason
        try:
            found = self._fetch(self._runtime, container_id)
        except (RuntimeUnavailable, CallTimeout) as exc:
            self._down_until = now + self._retry_interval
            self._down_reason = f"runtime unreachable: {exc}"
            return self._down_reason
        except CRIError as exc:
            return self._remember_miss(container_id, f"runtime error: {exc}", now, miss)
        if found is None:
            reason = (
                f"the runtime at {self._runtime.endpoint} knows no container or pod sandbox "
                f"{container_id} (not registered yet, removed already, or not a CRI container)"
            )
            return self._remember_miss(container_id, reason, now, miss)
        self._unknown.pop(container_id)
        self._known.put(container_id, found)
        return found

    def _remember_miss(self, container_id: str, reason: str, now: float, miss: _Miss | None) -> str:
        misses = 1 if miss is None else miss.misses + 1
        wait = min(self._negative_ttl, FIRST_RETRY_S * 2 ** (misses - 1))
        self._unknown.put(container_id, _Miss(reason, now + wait, misses))
        return reason

    def _fetch(self, runtime: StatusSource, container_id: str) -> Enrichment | None:
        self.calls += 1
        try:
            return from_container_status(runtime.container_status(container_id))
        except NotFound:
            pass
        self.calls += 1
        try:
            return from_sandbox_status(runtime.pod_sandbox_status(container_id))
        except NotFound:
            return None
