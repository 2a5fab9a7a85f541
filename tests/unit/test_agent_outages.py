"""What the agent decides while the apiserver or the runtime is away: the runtime's state
and the RuntimeConnected condition, Event writes that failed, the status writer's capped
backoff. The real outages: tests/cluster/test_apiserver_outage.py, test_runtime_outage.py."""

from __future__ import annotations

from datetime import UTC, datetime

from test_agent_state import _report

from podtrace_agent.backend import BackendStats
from podtrace_agent.cluster.eventlimit import Action, EventLimiter
from podtrace_agent.cluster.state import NodeState
from podtrace_agent.cluster.status import Health, node_status
from podtrace_agent.cluster.writer import MAX_BACKOFF_S, StatusWriter
from podtrace_agent.cri.endpoints import RuntimeReport
from podtrace_agent.cri.watch import RuntimeState, observed
from podtrace_api.conditions import get_condition

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 29, 8, 1, tzinfo=UTC)
T2 = datetime(2026, 11, 29, 8, 2, tzinfo=UTC)
FOUND = RuntimeReport(name="containerd", version="1.6", api_version="v1",
                      endpoint="unix:///run/containerd/containerd.sock")


def test_the_runtime_goes_away_and_comes_back() -> None:
    up = RuntimeState(FOUND, True, T0)
    down = observed(up, None, "Version: UNAVAILABLE: connection refused", T1)
    assert (down.reachable, down.since, down.report) == (False, T1, FOUND)
    still = observed(down, None, "Version: DEADLINE_EXCEEDED: slow", T2)
    assert (still.since, still.error) == (T1, "Version: DEADLINE_EXCEEDED: slow")
    assert "unix:///run/containerd/containerd.sock has not answered since " \
        "2026-11-29T08:01:00Z (Version: DEADLINE_EXCEEDED: slow)" in still.message
    back = observed(still, FOUND, "", T2)
    assert (back.reachable, back.since, back.error) == (True, T2, "")
    assert back.message == FOUND.message
    assert observed(back, FOUND, "", T0) == back  # up and still up: nothing moves


def test_an_agent_started_without_runtime_finds_it_later() -> None:
    none = RuntimeState(RuntimeReport(), False, T0)
    assert none.message == RuntimeReport().message  # discovery's own reason
    assert observed(none, None, "no usable CRI endpoint", T1).since == T0
    found = observed(none, FOUND, "", T1)
    assert (found.reachable, found.report, found.since) == (True, FOUND, T1)


def _runtime_condition(health: Health) -> tuple[str, str, str]:
    status = node_status(report=_report(), health=health, stats=BackendStats(0, 0),
                         state=NodeState(), previous=[], now=T0, agent_version="t")
    cond = get_condition(status.conditions, "RuntimeConnected")
    assert cond is not None
    return cond.status, cond.reason, cond.message


def test_runtime_connected_says_unreachable_with_the_reason() -> None:
    down = observed(RuntimeState(FOUND, True, T0), None, "Version: UNAVAILABLE: refused", T1)
    health = Health(True, down.report.to_status(), down.message, runtime_reachable=False)
    status, reason, message = _runtime_condition(health)
    assert (status, reason) == ("False", "RuntimeUnreachable")
    assert "Version: UNAVAILABLE: refused" in message and "still counted" in message
    up = Health(True, FOUND.to_status(), FOUND.message)
    assert _runtime_condition(up)[:2] == ("True", "CRIAvailable")
    none = Health(True, RuntimeReport().to_status(), "no runtime", runtime_reachable=False)
    assert _runtime_condition(none)[:2] == ("False", "NoCRIRuntime")


def test_a_failed_event_write_waits_an_interval_and_loses_no_match() -> None:
    limiter = EventLimiter(interval=30.0)
    series = limiter.record("pod", "TracingPolicy/p", "shell", "/bin/sh", now=0.0)
    assert series is not None
    assert [a for a, _ in limiter.due(0.0)] == [Action.CREATE]
    limiter.failed(series, 0.0)  # the apiserver is down
    for t in range(1, 30):
        limiter.record("pod", "TracingPolicy/p", "shell", "/bin/sh", now=float(t))
        assert limiter.due(float(t)) == []  # not asked again every tick
    assert [(a, s.count) for a, s in limiter.due(30.0)] == [(Action.CREATE, 30)]
    limiter.written(series, 30.0)
    assert (series.reported, series.created) == (30, True)


def test_after_an_outage_the_status_is_written_within_the_capped_backoff() -> None:
    up = False
    attempts: list[int] = []

    def send(document: dict[str, int]) -> None:
        attempts.append(document["n"])
        if not up:
            raise ConnectionRefusedError("apiserver down")

    writer = StatusWriter(send, interval=1.0)
    for t in range(120):  # offered every second, as the agent does
        writer.offer({"n": t}, float(t))
    assert attempts[:7] == [0, 1, 3, 7, 15, 25, 35]  # doubling, then every MAX_BACKOFF_S
    up = True
    t = 120
    while not writer.offer({"n": t}, float(t)):
        t += 1
    assert 0 <= t - 120 <= MAX_BACKOFF_S and attempts[-1] == t
