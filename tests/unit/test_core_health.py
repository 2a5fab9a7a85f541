"""The loop's heartbeat and /healthz: healthy while starting (up to a limit)
and while the loop turns, 503 once it has not turned for the stall timeout."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from podtrace_agent.cluster.serving import serve
from podtrace_agent.core import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat() -> None:
    clock = Clock()
    heartbeat = Heartbeat(stall_after=30, start_within=600, clock=clock)
    clock.now += 599
    assert heartbeat.check()[0]  # BCC's compile may take minutes
    clock.now += 2
    ok, why = heartbeat.check()
    assert not ok and "not started after 601s" in why
    heartbeat.beat()
    clock.now += 30
    assert heartbeat.check()[0]
    clock.now += 0.5
    ok, why = heartbeat.check()
    assert not ok and "30.5s ago" in why
    heartbeat.beat()
    assert heartbeat.check()[0]
    heartbeat.stopped()
    assert heartbeat.check() == (False, "the loop has stopped")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_healthz_and_metrics() -> None:
    clock = Clock()
    heartbeat = Heartbeat(stall_after=30, clock=clock)
    registry = CollectorRegistry()
    Counter("podtrace_test_things", "things", registry=registry).inc()
    server = serve(registry, heartbeat, 0, "127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _get(f"{base}/healthz")[0] == 200  # starting
        heartbeat.beat()
        clock.now += 31
        code, body = _get(f"{base}/healthz")
        assert code == 503 and body.startswith("stalled: the loop last turned 31.0s ago")
        heartbeat.beat()
        assert _get(f"{base}/healthz") == (200, "ok: the loop turned 0.0s ago\n")
        code, body = _get(f"{base}/metrics")
        assert code == 200 and "podtrace_test_things_total 1.0" in body
        assert _get(f"{base}/other")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
