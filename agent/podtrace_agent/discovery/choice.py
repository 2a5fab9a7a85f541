"""Which tracing backend to use, with the reason a user reads in NodeTracer status."""

from __future__ import annotations

from typing import Literal

from podtrace_api.nodetracer import BackendName

from .report import BackendReport, BccCheck

Requested = Literal["auto", "bcc", "ftrace"]


def choose_backend(requested: Requested, bcc: BccCheck, tracefs: str = "") -> BackendReport:
    """bcc when it can compile (auto or asked for), else ftrace, else none.

    Both backends attach to tracepoints through tracefs, so without it there is
    no backend at all.

    >>> choose_backend("auto", BccCheck(False, "no headers"), "/sys/kernel/tracing").name
    <BackendName.FTRACE: 'ftrace'>
    """
    if not tracefs:
        return BackendReport(BackendName.NONE, "no tracefs: neither bcc nor ftrace can attach")
    if requested == "ftrace":
        return BackendReport(BackendName.FTRACE, f"--backend ftrace; tracefs at {tracefs}")
    if requested == "bcc":
        if bcc.available:
            return BackendReport(BackendName.BCC, f"--backend bcc; {bcc.reason}")
        return BackendReport(BackendName.NONE, f"--backend bcc, but {bcc.reason}")
    if bcc.available:
        return BackendReport(BackendName.BCC, f"auto: {bcc.reason}")
    return BackendReport(
        BackendName.FTRACE, f"auto: bcc unavailable ({bcc.reason}); ftrace at {tracefs}"
    )


def fallback(requested: Requested, error: str, tracefs: str) -> BackendReport:
    """After the bcc backend failed to start: ftrace if auto allows it, else none."""
    if requested == "auto" and tracefs:
        return BackendReport(
            BackendName.FTRACE, f"auto: bcc failed to start ({error}); ftrace at {tracefs}"
        )
    return BackendReport(BackendName.NONE, f"bcc failed to start: {error}")
