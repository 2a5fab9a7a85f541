"""The agent's writes to the apiserver, from a thread of their own, so the loop
never waits on one (each still has its timeout, cluster/kube.py).

    sender = Sender(writer)                  # writer: the StatusWriter (batching, backoff)
    sender.status(document, now)             # the newest document wins; offered to writer
    sender.write(key, lambda: kube.write_event(...))   # False while `key` is in flight
    for key, error in sender.done(): ...     # what the writes came to (error None: written)
    sender.close(flush=10.0)                 # the last status written, then the thread ends

Status documents are offered to the StatusWriter in this thread, so its
interval, change detection and backoff work as they do on one thread; a
document that arrives while a write hangs replaces the one waiting. Other
writes (Events) run in order, one at a time, and report back through `done()`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from .writer import StatusWriter

log = logging.getLogger(__name__)


class Sender:
    def __init__(self, writer: StatusWriter) -> None:
        self.writer = writer
        self._cond = threading.Condition()
        self._status: tuple[dict[str, Any], float] | None = None
        self._writes: deque[tuple[Hashable, Callable[[], None]]] = deque()
        self._in_flight: set[Hashable] = set()
        self._done: list[tuple[Hashable, Exception | None]] = []
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="api-writes", daemon=True)
        self._thread.start()

    def status(self, document: dict[str, Any], now: float) -> None:
        """Offer `document` to the status writer (it decides whether to send it)."""
        with self._cond:
            self._status = (document, now)
            self._cond.notify()

    def write(self, key: Hashable, call: Callable[[], None]) -> bool:
        """Queue `call`; False (nothing queued) while a write of `key` is in flight."""
        with self._cond:
            if key in self._in_flight or self._closed:
                return False
            self._in_flight.add(key)
            self._writes.append((key, call))
            self._cond.notify()
            return True

    def done(self) -> list[tuple[Hashable, Exception | None]]:
        """The writes finished since the last call, with their error (None: written)."""
        with self._cond:
            done, self._done = self._done, []
        return done

    def idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every queued write; True when none is left."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._busy or self._status or self._writes), timeout)

    def close(self, flush: float = 0.0) -> None:
        """Let what is queued go out (up to `flush` seconds), then stop the thread."""
        if flush:
            self.idle(flush)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(max(flush, 1.0))

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._status or self._writes)
                if self._closed:
                    return
                status, self._status = self._status, None
                write = self._writes.popleft() if self._writes else None
                self._busy = True
            try:  # one of each per turn: a hanging status write cannot starve the others
                if status is not None:
                    self.writer.offer(*status)  # never raises: failures back off inside
                if write is not None:
                    self._run(*write)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _run(self, key: Hashable, call: Callable[[], None]) -> None:
        error: Exception | None = None
        try:
            call()
        except Exception as err:
            error = err
        with self._cond:
            self._in_flight.discard(key)
            self._done.append((key, error))
