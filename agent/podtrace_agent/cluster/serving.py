"""The agent's HTTP endpoint (the `--metrics-port`, 9465 by default):

    GET /metrics   Prometheus metrics of the agent's registry
    GET /healthz   200 while the loop turns (or the agent is starting), 503 when it
                   has not turned for `--stall-timeout` seconds: the DaemonSet's
                   livenessProbe, so a stuck agent is restarted

One daemon thread per request (ThreadingHTTPServer), so a slow scrape never
holds a probe up; nothing here touches the loop's state but the heartbeat.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..core import Heartbeat


def _handler(registry: CollectorRegistry, heartbeat: Heartbeat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                ok, why = heartbeat.check()
                self._reply(200 if ok else 503, f"{'ok' if ok else 'stalled'}: {why}\n".encode(),
                            "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found: /metrics or /healthz\n", "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds: not worth a log line

    return Handler


def serve(
    registry: CollectorRegistry, heartbeat: Heartbeat, port: int, addr: str = "0.0.0.0"
) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on `addr:port` from a daemon thread; the server
    is returned (`shutdown()` stops it; port 0 picks a free one)."""
    server = ThreadingHTTPServer((addr, port), _handler(registry, heartbeat))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
