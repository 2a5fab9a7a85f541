"""The enricher's cache, negative cache and runtime backoff, on a fake clock and a
recording stand-in for the two CRI calls (the real runtime is in tests/runtime)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from podtrace_agent.core import Enrichment
from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.cache import LRU
from podtrace_agent.cri.endpoints import Candidate, RuntimeReport
from podtrace_agent.cri.enrich import Enricher
from podtrace_agent.cri.errors import NotFound, RuntimeUnavailable, Unimplemented
from podtrace_agent.identity import parse
from podtrace_api.nodetracer import IdentitySource

E = "unix:///run/containerd/containerd.sock"
UID = "70a5467d-5966-4414-b0b6-08030ce40813"
CID = "1" * 64
SID = "2" * 64
PATH = f"/kubepods/besteffort/pod{UID}/{CID}"


def test_lru_evicts_least_recently_used() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_lru_entries_expire() -> None:
    cache: LRU[str, int] = LRU(4)
    cache.put("a", 1, now=10.0, ttl=5.0)
    assert cache.get("a", now=14.9) == 1
    assert cache.get("a", now=15.0) is None
    assert "a" not in cache


def test_lru_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LRU(0)


@dataclass
class Runtime:
    """Answers like containerd for the IDs it holds; records every call."""

    containers: set[str] = field(default_factory=lambda: {CID})
    sandboxes: set[str] = field(default_factory=lambda: {SID})
    down: bool = False
    endpoint: str = E
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _check(self, call: str, cid: str, known: set[str]) -> None:
        self.calls.append((call, cid))
        if self.down:
            raise RuntimeUnavailable(E, call, "UNAVAILABLE", "connect: Connection refused")
        if cid not in known:
            raise NotFound(E, call, "NOT_FOUND", f"{cid}: not found")

    def container_status(self, container_id: str) -> api_pb2.ContainerStatusResponse:
        self._check("ContainerStatus", container_id, self.containers)
        return api_pb2.ContainerStatusResponse(
            status=api_pb2.ContainerStatus(
                id=container_id,
                metadata=api_pb2.ContainerMetadata(name="app"),
                labels={"io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.uid": UID},
            )
        )

    def pod_sandbox_status(self, sandbox_id: str) -> api_pb2.PodSandboxStatusResponse:
        self._check("PodSandboxStatus", sandbox_id, self.sandboxes)
        return api_pb2.PodSandboxStatusResponse(
            status=api_pb2.PodSandboxStatus(
                id=sandbox_id, metadata=api_pb2.PodSandboxMetadata(name="web-0", uid=UID)
            )
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def enricher(runtime: Runtime, clock: Clock, **kwargs: float) -> Enricher:
    return Enricher(runtime, parse_path=parse, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_a_known_container_costs_one_call() -> None:
    runtime, clock = Runtime(), Clock()
    e = enricher(runtime, clock)
    for _ in range(3):
        found = e.lookup(CID)
        assert found.source is IdentitySource.CRI and found.container_name == "app"
    assert runtime.calls == [("ContainerStatus", CID)]


def test_a_sandbox_is_recognised() -> None:
    runtime, clock = Runtime(), Clock()
    found = enricher(runtime, clock).lookup(SID)
    assert found.sandbox is True and found.pod_name == "web-0"
    assert runtime.calls == [("ContainerStatus", SID), ("PodSandboxStatus", SID)]


def test_unknown_ids_are_asked_again_with_backoff_up_to_the_negative_ttl() -> None:
    runtime, clock = Runtime(containers=set(), sandboxes=set()), Clock()
    e = enricher(runtime, clock, negative_ttl=2.0)
    asked_at = []
    for _ in range(100):  # a storm of events from one unknown cgroup, for 10 s
        before = len(runtime.calls)
        found = e.lookup(CID, PATH)
        if len(runtime.calls) > before:
            asked_at.append(clock.now - 1000.0)
        clock.now += 0.1
    assert found.source is IdentitySource.CGROUP_PATH and found.pod_uid == UID
    assert "knows no container or pod sandbox" in found.reason and E in found.reason
    # 0.25 s, then 0.5, 1, 2 (the cap), 2, ...: each ask is ContainerStatus + PodSandboxStatus.
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(asked_at)]
    assert gaps[:4] == [0.3, 0.5, 1.0, 2.0] and set(gaps[3:]) == {2.0}
    assert len(runtime.calls) == 2 * len(asked_at) < 20


def test_a_container_registered_after_its_cgroup_is_named_soon_after() -> None:
    runtime, clock = Runtime(containers=set()), Clock()
    e = enricher(runtime, clock)
    assert e.lookup(CID, PATH).source is IdentitySource.CGROUP_PATH
    runtime.containers.add(CID)  # CRI registers it once RunPodSandbox/CreateContainer returns
    clock.now += 0.25
    assert e.lookup(CID, PATH).source is IdentitySource.CRI


def test_an_unreachable_runtime_is_not_asked_again_until_the_retry_interval() -> None:
    runtime, clock = Runtime(down=True), Clock()
    e = enricher(runtime, clock, retry_interval=1.0)
    first = e.lookup(CID, PATH)
    assert first.source is IdentitySource.CGROUP_PATH
    assert first.reason.startswith(f"runtime unreachable: CRI ContainerStatus on {E} failed")
    assert e.lookup("3" * 64, f"/kubepods/besteffort/pod{UID}/{'3' * 64}").reason == first.reason
    assert len(runtime.calls) == 1
    runtime.down = False
    clock.now += 1.0
    assert e.lookup(CID, PATH).source is IdentitySource.CRI  # recovered
    assert len(runtime.calls) == 2


def test_what_was_learned_stays_while_the_runtime_is_down() -> None:
    runtime, clock = Runtime(), Clock()
    e = enricher(runtime, clock)
    e.lookup(CID)
    runtime.down = True
    assert e.lookup(CID).source is IdentitySource.CRI


def test_forget_drops_the_entry() -> None:
    runtime, clock = Runtime(), Clock()
    e = enricher(runtime, clock)
    e.lookup(CID)
    e.forget(CID)
    e.lookup(CID)
    assert len(runtime.calls) == 2


def test_other_cri_errors_are_negative_cached_with_the_error() -> None:
    runtime, clock = Runtime(), Clock()

    def unimplemented(container_id: str) -> None:
        runtime.calls.append(("ContainerStatus", container_id))
        raise Unimplemented(E, "ContainerStatus", "UNIMPLEMENTED", "unknown method")

    runtime.container_status = unimplemented  # type: ignore[assignment,method-assign]
    e = enricher(runtime, clock)
    assert e.lookup(CID, PATH).reason.startswith("runtime error: CRI ContainerStatus")
    e.lookup(CID, PATH)
    assert len(runtime.calls) == 1


def test_without_a_path_nothing_is_known_but_the_reason() -> None:
    found = enricher(Runtime(down=True), Clock()).lookup(CID)
    assert found.source is None and found.reason.startswith("runtime unreachable")


def test_no_runtime_found_gives_path_identity_with_the_discovery_message() -> None:
    report = RuntimeReport(candidates=(Candidate(E, "does not exist"),))
    without = Enricher.from_report(report, parse_path=parse)
    found = without.lookup(CID, PATH)
    assert found.source is IdentitySource.CGROUP_PATH
    assert found.reason == report.message
    # nothing to wait on: the agent's core answers at once instead of in its worker
    assert not without.asks_runtime and enricher(Runtime(), Clock()).asks_runtime
    answer = Enrichment(without).request(CID, PATH)
    assert answer is not None and answer.reason == report.message
