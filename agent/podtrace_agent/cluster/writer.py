"""Batched, change-only, retried status writes.

The agent recomputes its whole status from in-memory state every tick; this
class decides whether to send it. It writes at most once per interval, only
when something other than the heartbeat changed (or the heartbeat is due: the
operator takes an agent that stops rewriting it for silent), and
backs off exponentially while the apiserver fails. Because the status is always
recomputed from cumulative counts, a write that failed loses nothing: the next
successful one carries everything, and what waits meanwhile is that one
document, however long the apiserver is away. The backoff stops growing at
MAX_BACKOFF_S: one failed PATCH every 10 s costs an apiserver nothing, and it
bounds how long the status lags behind once the apiserver is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
HEARTBEAT_FIELD = "lastHeartbeatTime"
# Default heartbeat interval (`podtrace-agent run --heartbeat-interval`): the operator's
# default --heartbeat-timeout (2m) is 3 of these plus room for a slow write.
HEARTBEAT_S = 30.0
MAX_BACKOFF_S = 10.0


def _without_heartbeat(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != HEARTBEAT_FIELD}


@dataclass
class StatusWriter:
    """Sends a status document through `send` when it is due. Time is passed in."""

    send: Callable[[dict[str, Any]], None]
    interval: float = 5.0
    heartbeat: float = HEARTBEAT_S  # seconds between writes when nothing else changed
    max_backoff: float = MAX_BACKOFF_S
    errors: int = 0
    _last_sent: dict[str, Any] | None = None
    _last_time: float = float("-inf")
    _next_try: float = float("-inf")
    _backoff: float = 0.0
    _failing: int = 0  # failed writes since the last one that went through
    _failing_since: float = 0.0
    last_error: str = field(default="")

    def offer(self, status: dict[str, Any], now: float) -> bool:
        """Write `status` if due; True when a write happened and succeeded."""
        if now < self._next_try or now - self._last_time < self.interval:
            return False
        changed = self._last_sent is None or _without_heartbeat(status) != _without_heartbeat(
            self._last_sent
        )
        if not changed and now - self._last_time < self.heartbeat:
            return False
        try:
            self.send(status)
        except Exception as err:  # any API failure: keep state, retry later
            if not self._failing:
                self._failing_since = now
                log.warning("status not written (retrying with backoff): %s", str(err)[:300])
            self._failing += 1
            self.errors += 1
            self.last_error = str(err)[:512]
            self._backoff = min(self.max_backoff, max(1.0, self._backoff * 2))
            self._next_try = now + self._backoff
            return False
        if self._failing:
            log.info("status written again after %d failed writes over %.0fs",
                     self._failing, now - self._failing_since)
            self._failing = 0
        self._backoff = 0.0
        self._last_sent = status
        self._last_time = now
        return True
