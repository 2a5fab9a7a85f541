"""Whether the agent's loop is alive: the loop beats once per turn, a probe
asks `check()` from another thread. Pure apart from the lock; the clock is
passed in.

    heartbeat = Heartbeat(stall_after=30.0, start_within=600.0)
    heartbeat.beat()                     # each turn of the loop
    ok, message = heartbeat.check()      # /healthz

Until the first beat the agent is starting (discovery, BCC's compile): healthy
for `start_within` seconds. After it, unhealthy when the last beat is older
than `stall_after` seconds (a loop stuck in a call), and once `stopped()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Heartbeat:
    def __init__(
        self,
        stall_after: float = 30.0,
        start_within: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after = stall_after
        self.start_within = start_within
        self.clock = clock
        self._created = clock()
        self._last: float | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def beat(self, now: float | None = None) -> None:
        with self._lock:
            self._last = self.clock() if now is None else now

    def stopped(self) -> None:
        with self._lock:
            self._stopped = True

    def check(self) -> tuple[bool, str]:
        """(healthy, why) now."""
        now = self.clock()
        with self._lock:
            last, stopped = self._last, self._stopped
        if stopped:
            return False, "the loop has stopped"
        if last is None:
            starting = now - self._created
            if starting > self.start_within:
                return False, (f"not started after {starting:.0f}s "
                               f"(limit {self.start_within:.0f}s)")
            return True, f"starting for {starting:.0f}s"
        age = now - last
        if age > self.stall_after:
            return False, f"the loop last turned {age:.1f}s ago (limit {self.stall_after:.0f}s)"
        return True, f"the loop turned {age:.1f}s ago"
