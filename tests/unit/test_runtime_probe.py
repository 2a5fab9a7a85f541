"""Discovery's I/O edge on the local filesystem and unix sockets (no runtime, no
root): what is at a path, and a socket that speaks HTTP like Docker's API.

The HTTP server replays a reply recorded from Docker 24's `GET /version`; the
real containerd cases are in tests/runtime."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from podtrace_agent.cri.endpoints import Engine, PathKind
from podtrace_agent.cri.runtime import discover_runtime, http_probe, inspect_path, probe

DOCKER_VERSION = {"Platform": {"Name": "Docker Engine - Community"}, "Version": "24.0.7",
                  "ApiVersion": "1.43", "Os": "linux"}  # fmt: skip


class _DockerLike(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the handler method http.server calls
        body = json.dumps(DOCKER_VERSION).encode()
        self.send_response(200)
        self.send_header("Api-Version", "1.43")
        self.send_header("Server", "Docker/24.0.7 (linux)")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def docker_sock(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "docker.sock"
    server = _UnixHTTPServer(str(path), _DockerLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()
    thread.join()


def test_inspect_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "containerd.sock").touch()
    (tmp_path / "file").touch()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "s.sock"))
        assert inspect_path(str(tmp_path / "s.sock")) == (PathKind.SOCKET, "")
    assert inspect_path(str(tmp_path / "none")) == (PathKind.MISSING, "")
    assert inspect_path(str(tmp_path / "empty")) == (PathKind.EMPTY_DIR, "")
    assert inspect_path(str(tmp_path / "full")) == (PathKind.DIR, "")
    assert inspect_path(str(tmp_path / "file")) == (PathKind.OTHER, "")


def test_a_docker_like_socket_is_recognised_over_http(docker_sock: Path) -> None:
    found = http_probe(str(docker_sock))
    assert found is not None and (found.engine, found.version) == (Engine.DOCKER, "24.0.7")
    report, reason = probe(str(docker_sock))
    assert report is None
    assert reason.startswith("Docker Engine 24.0.7 API, not a CRI endpoint")


def test_a_socket_nobody_listens_on(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening: what a dead runtime leaves
    assert http_probe(str(stale)) is None
    assert probe(str(stale))[1].startswith("connection refused: nothing listens")


def test_every_failure_is_reported_in_order(tmp_path: Path, docker_sock: Path) -> None:
    (tmp_path / "empty.sock").mkdir()
    report = discover_runtime([str(tmp_path / "empty.sock"), str(docker_sock)], host_root=None)
    reasons = {c.endpoint: c.reason for c in report.candidates}
    assert list(reasons)[:2] == [f"unix://{tmp_path}/empty.sock", f"unix://{docker_sock}"]
    assert reasons[f"unix://{tmp_path}/empty.sock"].startswith("is an empty directory")
    assert reasons[f"unix://{docker_sock}"].startswith("Docker Engine 24.0.7 API")
