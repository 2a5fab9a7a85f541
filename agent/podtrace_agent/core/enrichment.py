"""Enrichment dispatch: who a container is, asked of the container runtime off
the loop.

The loop hands each new container to `Enrichment.request()` and collects the
answers with `done()`, never waiting. A worker thread asks the enricher
(`cri.enrich.Enricher`: every CRI call has a deadline, answers are cached). A
container the runtime does not know yet (containerd creates a sandbox's cgroup
before RunPodSandbox returns), or a runtime that does not answer, is asked
again after each of RETRY_DELAYS_S; after the last, the cgroup path's identity
with the reason is the answer. A container that goes is forgotten: its retries
are dropped, and so is the enricher's cache entry.

With no runtime to ask, answers come at once from `request()` and no thread
runs.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from podtrace_api.nodetracer import IdentitySource

RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0)
CLOSE_WAIT_S = 5.0


class EnrichmentLike(Protocol):
    """What an enricher returns (podtrace_agent.cri's Enrichment fits this)."""

    @property
    def source(self) -> IdentitySource | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def pod_name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def container_name(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def sandbox(self) -> bool | None: ...


class EnricherLike(Protocol):
    """Container ID (and cgroup path) → who it is; podtrace_agent.cri's Enricher fits."""

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> EnrichmentLike: ...


@dataclass(frozen=True)
class PathOnly:
    """An answer that is not the runtime's: the cgroup path's identity, and why."""

    reason: str = ""
    source: IdentitySource | None = IdentitySource.CGROUP_PATH
    pod_name: str = ""
    namespace: str = ""
    container_name: str = ""
    image: str = ""
    sandbox: bool | None = None


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    container_id: str = field(compare=False)
    path: str = field(compare=False)
    token: int = field(compare=False)
    attempt: int = field(compare=False, default=0)


def ask(enricher: EnricherLike, container_id: str, path: str) -> EnrichmentLike:
    """The enricher's answer; a failing enricher is an answer too (never raises)."""
    try:
        return enricher.lookup(container_id, path)
    except Exception as err:
        return PathOnly(reason=str(err) or type(err).__name__)


class Enrichment:
    """Requests and answers between the loop (one thread) and the worker."""

    def __init__(
        self,
        enricher: EnricherLike | None,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enricher = enricher
        self.retry_delays = tuple(retry_delays)
        self.clock = clock
        self.asked = 0  # lookups made by the worker
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._wanted: dict[str, int] = {}  # container id → token of its request
        self._done: list[tuple[str, EnrichmentLike]] = []
        self._seq = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def asynchronous(self) -> bool:
        """Whether answers come from the worker (a runtime to ask) or at once."""
        return self.enricher is not None and bool(getattr(self.enricher, "asks_runtime", True))

    def request(self, container_id: str, path: str) -> EnrichmentLike | None:
        """Ask who `container_id` (its cgroup at `path`) is: the answer now when no
        runtime is asked, else None and the answer comes from `done()`."""
        if self.enricher is None:
            return PathOnly()
        if not self.asynchronous:
            return ask(self.enricher, container_id, path)
        with self._cond:
            token = next(self._seq)
            self._wanted[container_id] = token
            heapq.heappush(self._jobs, _Job(self.clock(), token, container_id, path, token))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._work, name="enrichment",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return None

    def done(self) -> list[tuple[str, EnrichmentLike]]:
        """The answers that arrived since the last call (container id, answer)."""
        with self._cond:
            done, self._done = self._done, []
        return done

    def forget(self, container_id: str) -> None:
        """The container is gone: no answer for it, nothing cached about it."""
        with self._cond:
            self._wanted.pop(container_id, None)
        forget = getattr(self.enricher, "forget", None)
        if forget is not None:
            forget(container_id)

    @property
    def pending(self) -> int:
        """Containers whose answer has not come yet."""
        with self._cond:
            return len(self._wanted)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every pending answer; True if none is left."""
        deadline = self.clock() + timeout
        with self._cond:
            while self._wanted and (left := deadline - self.clock()) > 0:
                self._cond.wait(left)
            return not self._wanted

    def close(self) -> None:
        """Stop the worker (a lookup in flight ends at its CRI deadline)."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(CLOSE_WAIT_S)

    # --- the worker ---------------------------------------------------------------------

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._closed:
                if self._jobs:
                    wait = self._jobs[0].due - self.clock()
                    if wait <= 0:
                        job = heapq.heappop(self._jobs)
                        if self._wanted.get(job.container_id) == job.token:
                            return job
                        continue
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        assert self.enricher is not None
        while (job := self._next_job()) is not None:
            answer = ask(self.enricher, job.container_id, job.path)
            with self._cond:
                self.asked += 1
                if self._wanted.get(job.container_id) != job.token:
                    continue  # forgotten meanwhile
                if answer.source is not IdentitySource.CRI and job.attempt < len(
                        self.retry_delays):
                    job.due = self.clock() + self.retry_delays[job.attempt]
                    job.attempt += 1
                    heapq.heappush(self._jobs, job)
                    continue
                del self._wanted[job.container_id]
                self._done.append((job.container_id, answer))
                self._cond.notify_all()
