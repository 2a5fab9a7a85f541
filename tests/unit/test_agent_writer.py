"""The status writer: at most one write per interval, change-only, backoff on failure."""

from __future__ import annotations

from typing import Any

import pytest

from podtrace_agent.cluster.writer import StatusWriter


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.down = False

    def __call__(self, status: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionError("apiserver unreachable")
        self.sent.append(status)


def test_writes_only_on_change_and_heartbeat() -> None:
    sink = Sink()
    writer = StatusWriter(sink, interval=5, heartbeat=60)
    assert writer.offer({"n": 1, "lastHeartbeatTime": "t0"}, now=0)
    assert not writer.offer({"n": 2, "lastHeartbeatTime": "t1"}, now=1)  # within interval
    assert writer.offer({"n": 2, "lastHeartbeatTime": "t6"}, now=6)
    assert not writer.offer({"n": 2, "lastHeartbeatTime": "t20"}, now=20)  # heartbeat only
    assert writer.offer({"n": 2, "lastHeartbeatTime": "t70"}, now=70)  # heartbeat due
    assert [s["n"] for s in sink.sent] == [1, 2, 2]


def test_outage_backs_off_and_loses_nothing() -> None:
    sink = Sink()
    writer = StatusWriter(sink, interval=1, max_backoff=8)
    sink.down = True
    for t in range(40):
        assert not writer.offer({"count": t}, now=t)
    # tries at 0, 1, 3, 7, 15, 23, 31, 39: the backoff doubles up to 8 s
    assert writer.errors == 8
    assert "unreachable" in writer.last_error
    sink.down = False
    assert writer.offer({"count": 47}, now=47)  # next try after the last backoff
    assert sink.sent == [{"count": 47}]  # the latest cumulative state arrives whole


@pytest.mark.parametrize("interval", [0.5, 5.0])
def test_first_offer_always_writes(interval: float) -> None:
    sink = Sink()
    assert StatusWriter(sink, interval=interval).offer({"a": 1}, now=100.0)


def test_the_heartbeat_interval_flag_reaches_the_writer_and_the_interval_bounds_it() -> None:
    from podtrace_agent.cluster.agent import AgentOptions
    from podtrace_agent.main import parser

    args = parser().parse_args(["run", "--node-name=n1"])
    assert (args.heartbeat_interval, AgentOptions("n1").heartbeat_interval) == (30.0, 30.0)
    args = parser().parse_args(["run", "--node-name=n1", "--heartbeat-interval=2s",
                                "--status-interval=1s"])  # fmt: skip
    assert (args.heartbeat_interval, args.status_interval) == (2.0, 1.0)
    sink = Sink()
    writer = StatusWriter(sink, interval=1, heartbeat=2)
    same = {"n": 1}
    written = [t for t in range(10) if writer.offer({**same, "lastHeartbeatTime": t}, now=t)]
    assert written == [0, 2, 4, 6, 8]
    slow = StatusWriter(Sink(), interval=5, heartbeat=2)  # never more often than interval
    assert [t for t in range(12) if slow.offer({**same, "lastHeartbeatTime": t}, now=t)] == [
        0, 5, 10]


def test_the_agent_takes_the_operators_ready_unknown_only_when_newer_than_its_own() -> None:
    from datetime import UTC, datetime

    from podtrace_agent.cluster.agent import _marked_silent_since
    from podtrace_api.base import Condition

    def ready(status: str, minute: int) -> list[Condition]:
        return [Condition(type="Ready", status=status, reason="AgentHeartbeatStale",
                          last_transition_time=datetime(2026, 1, 1, 0, minute, tzinfo=UTC))]

    assert _marked_silent_since(ready("Unknown", 5), ready("True", 1))
    assert not _marked_silent_since(ready("Unknown", 5), ready("True", 6))  # an older event
    assert not _marked_silent_since(ready("True", 5), ready("True", 1))
    assert _marked_silent_since(ready("Unknown", 5), [])
