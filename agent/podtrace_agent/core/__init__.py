"""The agent's core, shared by `podtrace-agent standalone` and `podtrace-agent run`:
both are thin shells that pick a `Mode` and call into this package.

    start.py        backend start-up (make_backend, start_backend, AUTO_PROBES)
    loop.py         the loop (Core, Mode, Stop): poll, bookkeeping, counts, resync
    containers.py   containers and their sub-cgroups, counts carried (pure)
    enrichment.py   CRI lookups in a worker thread, retried, never on the loop
    health.py       the loop's heartbeat, for /healthz
    output.py       JSON lines, wall-clock timestamps
"""

from __future__ import annotations

from .containers import Added, Container, Containers, Removed
from .enrichment import EnricherLike, Enrichment, EnrichmentLike, PathOnly
from .health import Heartbeat
from .loop import Core, Found, Mode, Stop
from .output import Line, Output, wall_time
from .start import AUTO_PROBES, make_backend, start_backend

__all__ = [
    "AUTO_PROBES",
    "Added",
    "Container",
    "Containers",
    "Core",
    "EnricherLike",
    "Enrichment",
    "EnrichmentLike",
    "Found",
    "Heartbeat",
    "Line",
    "Mode",
    "Output",
    "PathOnly",
    "Removed",
    "Stop",
    "make_backend",
    "start_backend",
    "wall_time",
]
