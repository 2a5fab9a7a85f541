"""Programming one cgroup's request into the backend, one source at a time when
the whole request does not fit.

A request is the union of every source that selects the container. When the
backend refuses it (a table is full, or any other failure), the sources are
tried one by one in id order and each keeps its place only if the backend
takes it: a source that does not fit is reported with the reason, and the
others trace the container as usual. No exception of the backend leaves this
module: one source's failure never stops the agent's loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from podtrace_api.limits import NotAppliedReason
from podtrace_api.nodetracer import TraceSource

from ..backend import Backend, CapacityError
from .plan import Rejection, TraceRequest, trace_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What the backend holds for one cgroup after `apply_request`."""

    request: TraceRequest | None  # None: the cgroup is not traced
    rejected: dict[str, Rejection] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.request is not None and not self.rejected


def _program(backend: Backend, cgroup_id: int, request: TraceRequest) -> None:
    backend.trace(cgroup_id, request.path, request.mask, request.open_prefixes,
                  request.connect_ports)


def _rejection(err: Exception) -> Rejection:
    if isinstance(err, CapacityError):
        return Rejection(NotAppliedReason.CAPACITY_EXCEEDED, str(err))
    return Rejection(NotAppliedReason.APPLY_FAILED, f"{type(err).__name__}: {err}")


def apply_request(
    backend: Backend,
    cgroup_id: int,
    request: TraceRequest,
    sources: Mapping[str, TraceSource],
) -> Applied:
    """Program `request` for `cgroup_id`; when the backend refuses it, as many of
    its sources as fit, each refused one with its reason."""
    try:
        _program(backend, cgroup_id, request)
        return Applied(request)
    except Exception as err:
        first = err
    if not isinstance(first, CapacityError):
        log.warning("tracing %s failed, retrying source by source: %s", request.path, first)
    kept: list[TraceSource] = []
    rejected: dict[str, Rejection] = {}
    for sid in request.sources:
        source = sources.get(sid)
        if source is None:
            continue
        candidate = trace_request(request.path, [*kept, source])
        try:
            _program(backend, cgroup_id, candidate)
        except Exception as err:
            rejected[sid] = _rejection(err)
            continue
        kept.append(source)
    if kept:
        return Applied(trace_request(request.path, kept), rejected)
    remove(backend, cgroup_id)
    return Applied(None, rejected)


def remove(backend: Backend, cgroup_id: int) -> bool:
    """Untrace `cgroup_id`; False (logged) when the backend failed to."""
    try:
        backend.untrace(cgroup_id)
    except Exception:
        log.exception("untracing cgroup %d failed", cgroup_id)
        return False
    return True
