"""Backend start-up, the same for every command: the chosen backend constructed
with the agent's table sizes, started, and (with `auto`) bcc falling back to
ftrace when it fails to start; the discovery report comes back saying which
backend really runs and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from podtrace_api.nodeconfig import Probe
from podtrace_api.nodetracer import BackendName

from ..backend import Backend, BackendError, BackendOptions, KubepodsRootLike
from ..discovery import BackendReport, DiscoveryReport, fallback
from ..discovery.choice import Requested

# What the backend traces a new container cgroup with from its creation on, before
# user space has looked at it: syscall counts and process events.
AUTO_PROBES = Probe.SYSCALLS | Probe.EXEC | Probe.EXIT

BackendFactory = Callable[[BackendName, KubepodsRootLike, str], Backend]


def make_backend(
    name: BackendName, kubepods: KubepodsRootLike, tracefs: str, *, max_traced: int = 512,
    ringbuf_pages: int = 256, pin_dir: Path | None = None, allow_mount: bool = True,
    reported: bool = False,
) -> Backend:
    """The backend `name`, constructed (not started). New container cgroups are
    traced by the backend itself from their creation (AUTO_PROBES). The table
    sizes are the agent's flags (README: Limits). bcc pins its maps and links
    under `pin_dir` (bpf/pins.py), so that a restarted agent loses no count;
    `reported`: the node agent's, which goes on from what its status reported."""
    options = BackendOptions(auto_trace_mask=AUTO_PROBES, max_traced=max_traced)
    if name is BackendName.BCC:
        from ..bpf.loader import BccBackend

        return BccBackend(kubepods, options, ringbuf_pages=ringbuf_pages, pin_dir=pin_dir,
                          allow_mount=allow_mount, reported=reported)
    if name is BackendName.FTRACE:
        from ..ftrace.backend import FtraceBackend

        return FtraceBackend(kubepods, options, tracefs=Path(tracefs) if tracefs else None)
    raise BackendError("no backend")


def start_backend(
    report: DiscoveryReport,
    requested: Requested,
    kubepods: KubepodsRootLike,
    make: BackendFactory = make_backend,
) -> tuple[Backend | None, DiscoveryReport]:
    """Start the chosen backend; with auto, fall back to ftrace if bcc fails to start
    (a compile or verifier error is only seen here). The report comes back with
    the backend that really runs and why."""
    choice = report.backend
    while choice.name is not BackendName.NONE:
        try:
            backend = make(choice.name, kubepods, report.kernel.tracefs)
            backend.start()
        except BackendError as err:
            if choice.name is BackendName.BCC:
                choice = fallback(requested, str(err), report.kernel.tracefs)
            else:
                choice = BackendReport(BackendName.NONE, f"{choice.name} failed to start: {err}")
            continue
        return backend, replace(report, backend=choice)
    return None, replace(report, backend=choice)
