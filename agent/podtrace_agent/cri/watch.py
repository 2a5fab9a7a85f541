"""The runtime, watched while the agent runs.

containerd (or any CRI runtime) may stop and come back while the agent traces:
the containers it started keep running under their shims, the kernel keeps
counting, and only naming new containers needs the runtime. Discovery at start
says which runtime there is; this module keeps that true afterwards, so that
NodeTracer's `RuntimeConnected` condition says when the runtime stopped
answering and why, and so that the agent knows when it is back (to ask again
about the containers it could only name from their cgroup paths).

    watch = RuntimeWatch(report, rediscover=lambda: discover_runtime(endpoints, root))
    watch.start(on_back=...)      # a thread: CRI Version every `every` seconds
    watch.state()                 # RuntimeState: the runtime, reachable or not, since when, why

An agent started while no runtime answered keeps looking (`rediscover`) and
hands the runtime it finds to `on_back` too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .client import CRIClient
from .endpoints import RuntimeReport
from .errors import CRIError

log = logging.getLogger(__name__)
EVERY_S = 2.0
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RuntimeState:
    """What the agent knows of the runtime now."""

    report: RuntimeReport  # the runtime found (at start or since); empty: none yet
    reachable: bool  # it answered the last Version call
    since: datetime  # when `reachable` last changed
    error: str = ""  # why the last call failed

    @property
    def message(self) -> str:
        """One line for RuntimeConnected's message."""
        if not self.report.found or self.reachable:
            return self.report.message
        return (f"{self.report.name or 'the runtime'} at {self.report.endpoint} has not "
                f"answered since {self.since:%Y-%m-%dT%H:%M:%SZ} ({self.error}); traced "
                "containers are still counted, identities known before are kept, containers "
                "seen meanwhile are named from their cgroup paths and the Kubernetes API "
                "until it answers again")


def observed(state: RuntimeState, report: RuntimeReport | None, error: str, now: datetime
             ) -> RuntimeState:
    """The state after one look: `report` when the runtime answered, else None and why.

    >>> t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    >>> up = RuntimeState(RuntimeReport(endpoint="unix:///x"), True, t0)
    >>> down = observed(up, None, "UNAVAILABLE", t1)
    >>> (down.reachable, down.since == t1, down.report.endpoint)
    (False, True, 'unix:///x')
    >>> observed(down, None, "UNAVAILABLE", t0).since == t1   # still down: since stays
    True
    """
    if report is not None:
        if state.reachable and state.report.found:
            return replace(state, report=report, error="")
        return RuntimeState(report, True, now)
    if not state.reachable:
        return replace(state, error=error)
    return RuntimeState(state.report, False, now, error)


class RuntimeWatch:
    """A thread that asks the runtime's Version every `every` seconds."""

    def __init__(
        self,
        report: RuntimeReport,
        *,
        rediscover: Callable[[], RuntimeReport] | None = None,
        every: float = EVERY_S,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.every = every
        self.timeout = timeout
        self._rediscover = rediscover
        self._state = RuntimeState(report, report.found, datetime.now(UTC))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: CRIClient | None = None

    def state(self) -> RuntimeState:
        with self._lock:
            return self._state

    def start(self, on_back: Callable[[RuntimeReport], None] = lambda _: None) -> None:
        """Watch from now on; `on_back(report)` runs (in this thread) each time the
        runtime answers again after it did not, or is found after none was."""
        self._thread = threading.Thread(target=self._run, args=(on_back,), name="runtime-watch",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1.0)
        if self._client is not None:
            self._client.close()

    def look(self) -> RuntimeState:
        """One look at the runtime now; returns the new state."""
        before = self.state()
        report, error = self._ask(before.report)
        state = observed(before, report, error, datetime.now(UTC))
        with self._lock:
            self._state = state
        if state.reachable and not before.reachable:
            log.info("runtime answers again: %s", state.message)
        elif before.reachable and not state.reachable:
            log.warning("runtime: %s", state.message)
        return state

    def _ask(self, report: RuntimeReport) -> tuple[RuntimeReport | None, str]:
        if not report.found:
            if self._rediscover is None:
                return None, report.message
            found = self._rediscover()
            return (found, "") if found.found else (None, found.message)
        if self._client is None or self._client.endpoint != report.endpoint:
            self._client = CRIClient(report.endpoint, timeout=self.timeout)
        try:
            version = self._client.version()
        except CRIError as err:
            return None, f"{err.call}: {err.code}: {err.details}"[:300]
        return replace(report, name=version.runtime_name, version=version.runtime_version,
                       api_version=version.runtime_api_version), ""

    def _run(self, on_back: Callable[[RuntimeReport], None]) -> None:
        while not self._stop.wait(self.every):
            before = self.state()
            try:
                state = self.look()
                if state.reachable and not (before.reachable and before.report.found):
                    on_back(state.report)
            except Exception:  # never let the watch die: the next look may work
                log.exception("runtime watch")
