"""Enrichment dispatch: lookups run in a worker thread, never on the caller; an
ID the runtime does not know yet is asked again with backoff until it does or
the retries run out; a container that goes is forgotten, its retries dropped."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from podtrace_agent.core.enrichment import Enrichment, PathOnly
from podtrace_api.nodetracer import IdentitySource

A, B = "a" * 64, "b" * 64
FAST = (0.01, 0.01, 0.01)


@dataclass(frozen=True)
class Answer:
    source: IdentitySource | None
    reason: str = ""
    pod_name: str = "web-0"
    namespace: str = "shop"
    container_name: str = "app"
    image: str = "busybox"
    sandbox: bool | None = False


class Runtime:
    """Knows an ID after `unknown_for` lookups of it; `gate` holds every lookup."""

    asks_runtime = True

    def __init__(self, unknown_for: int = 0) -> None:
        self.unknown_for = unknown_for
        self.asked: list[str] = []
        self.forgotten: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> Answer:
        self.gate.wait(10)
        self.asked.append(container_id)
        if self.asked.count(container_id) <= self.unknown_for:
            return Answer(IdentitySource.CGROUP_PATH, "not registered yet")
        return Answer(IdentitySource.CRI)

    def forget(self, container_id: str) -> None:
        self.forgotten.append(container_id)


def test_the_caller_never_waits_for_the_runtime() -> None:
    runtime = Runtime()
    runtime.gate.clear()  # a runtime that does not answer
    enrichment = Enrichment(runtime)
    start = time.monotonic()
    assert enrichment.request(A, "kubepods/a") is None
    assert time.monotonic() - start < 0.5 and enrichment.done() == []
    assert enrichment.pending == 1
    runtime.gate.set()
    assert enrichment.wait(10)
    ((cid, answer),) = enrichment.done()
    assert (cid, answer.source) == (A, IdentitySource.CRI)
    enrichment.close()


def test_an_id_not_known_yet_is_asked_again_until_it_is() -> None:
    runtime = Runtime(unknown_for=2)
    enrichment = Enrichment(runtime, retry_delays=FAST)
    enrichment.request(A, "kubepods/a")
    assert enrichment.wait(10)
    ((_, answer),) = enrichment.done()
    assert answer.source is IdentitySource.CRI and runtime.asked == [A, A, A]
    enrichment.close()


def test_after_the_last_retry_the_path_identity_is_the_answer() -> None:
    runtime = Runtime(unknown_for=100)
    enrichment = Enrichment(runtime, retry_delays=FAST)
    enrichment.request(A, "kubepods/a")
    assert enrichment.wait(10)
    ((_, answer),) = enrichment.done()
    assert (answer.source, answer.reason) == (IdentitySource.CGROUP_PATH, "not registered yet")
    assert len(runtime.asked) == 1 + len(FAST)
    enrichment.close()


def test_a_container_that_goes_is_not_asked_about_again() -> None:
    runtime = Runtime(unknown_for=100)
    enrichment = Enrichment(runtime, retry_delays=(0.2,) * 20)
    enrichment.request(A, "kubepods/a")
    enrichment.request(B, "kubepods/b")
    deadline = time.monotonic() + 10
    while len(runtime.asked) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    enrichment.forget(A)
    time.sleep(0.5)
    assert runtime.asked.count(A) == 1 and runtime.asked.count(B) > 1
    assert runtime.forgotten == [A] and enrichment.pending == 1
    enrichment.close()
    assert enrichment.done() == []


def test_a_failing_lookup_is_an_answer() -> None:
    class Broken(Runtime):
        def lookup(self, container_id: str, cgroup_path: str | None = None) -> Answer:
            raise TimeoutError("CRI call timed out")

    enrichment = Enrichment(Broken(), retry_delays=())
    enrichment.request(A, "kubepods/a")
    assert enrichment.wait(10)
    assert enrichment.done() == [(A, PathOnly(reason="CRI call timed out"))]
    enrichment.close()


def test_without_a_runtime_answers_come_at_once() -> None:
    class Local(Runtime):
        asks_runtime = False

    enrichment = Enrichment(Local())
    answer = enrichment.request(A, "kubepods/a")
    assert answer is not None and answer.source is IdentitySource.CRI
    assert Enrichment(None).request(A, "kubepods/a") == PathOnly()
    assert enrichment._thread is None
