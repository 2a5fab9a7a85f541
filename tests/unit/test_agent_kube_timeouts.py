"""Every call the agent makes to the apiserver has a timeout: against a server
that accepts connections and never answers, each call gives up within its
timeout instead of holding the agent, and a watch keeps retrying."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kubernetes import client

from podtrace_agent.cluster.kube import Kube

TIMEOUT_S = 0.5
pytestmark = pytest.mark.timeout(60)  # without a timeout a call would hang here


@pytest.fixture
def silent_server() -> Iterator[str]:
    """http://127.0.0.1:<port> that accepts and reads, and never replies."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def kube(silent_server: str) -> Iterator[Kube]:
    config = client.Configuration()
    config.host = silent_server
    config.retries = 0
    api = client.ApiClient(config)
    kube = Kube(api, "node-1", timeout=TIMEOUT_S)
    yield kube
    kube.stop.set()
    api.close()


def _took(call: object) -> float:
    start = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timed? ?out"):
        call()  # type: ignore[operator]
    return time.monotonic() - start


def test_writes_give_up_after_the_timeout(kube: Kube) -> None:
    assert _took(lambda: kube.patch_status({"observedGeneration": 1})) < 5 * TIMEOUT_S
    assert _took(lambda: kube.write_event(
        pod={"uid": "u", "namespace": "ns", "name": "p"}, key=("u", "s", "r"),
        reason="Shell", type_="Warning", note="n", action="sh", count=1,
        first_seen=datetime.now(UTC), related=None,
    )) < 5 * TIMEOUT_S


def test_a_watch_that_hangs_is_retried(kube: Kube, caplog: pytest.LogCaptureFixture) -> None:
    synced: list[object] = []
    with caplog.at_level(logging.WARNING, logger="podtrace_agent.cluster.kube"):
        thread = kube.watch_pods(lambda kind, obj: None, synced.append)
        deadline = time.monotonic() + 10 * TIMEOUT_S
        while "watch of pods interrupted" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "watch of pods interrupted" in caplog.text and "relisting" in caplog.text
        assert thread.is_alive() and synced == []
        kube.stop.set()
        thread.join(5)
    assert not thread.is_alive()
