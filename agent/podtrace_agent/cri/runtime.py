"""Runtime discovery: find the node's CRI endpoint and say why every other one failed.

    report = discover_runtime(["unix:///run/containerd/containerd.sock"], host_root="/host")
    report.to_status()      # NodeTracer status.runtime: name, version, API version,
                            # endpoint, and each rejected candidate with its reason

The endpoints are tried in the order of `endpoints.candidate_endpoints`; the first
that answers the CRI Version call wins. For each other one this module looks at
what is there (nothing, an empty directory, a socket that refuses, a socket that
speaks Docker's or Podman's HTTP API) and `endpoints` turns that into a reason
with the fix. This is the I/O edge; the reasoning is in `endpoints`.
"""

from __future__ import annotations

import http.client
import os
import socket
import stat
from collections.abc import Sequence

from .client import DEFAULT_TIMEOUT_S, CRIClient
from .endpoints import (
    Candidate,
    HTTPEngine,
    PathKind,
    RuntimeReport,
    candidate_endpoints,
    classify_http,
    cri_reason,
    http_reason,
    invalid_endpoints,
    path_reason,
    socket_path,
)
from .errors import CRIError, Unimplemented

_HTTP_BODY_LIMIT = 64 * 1024


def inspect_path(path: str) -> tuple[PathKind, str]:
    """What is at `path` (following symlinks), and the error text when stat failed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return PathKind.MISSING, ""
    except OSError as exc:
        return PathKind.UNREADABLE, exc.strerror or str(exc)
    if stat.S_ISSOCK(st.st_mode):
        return PathKind.SOCKET, ""
    if stat.S_ISDIR(st.st_mode):
        try:
            empty = not os.listdir(path)
        except OSError as exc:
            return PathKind.UNREADABLE, exc.strerror or str(exc)
        return (PathKind.EMPTY_DIR if empty else PathKind.DIR), ""
    return PathKind.OTHER, ""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def http_probe(path: str, timeout: float = DEFAULT_TIMEOUT_S) -> HTTPEngine | None:
    """`GET /version` over the unix socket: what answered, or None if nothing spoke HTTP.

    Docker's and Podman's API sockets answer this; a CRI socket (gRPC over
    HTTP/2) does not, so it is only asked after the CRI call failed.
    """
    conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/version")
        reply = conn.getresponse()
        body = reply.read(_HTTP_BODY_LIMIT)
        return classify_http(dict(reply.getheaders()), body)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe(endpoint: str, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[RuntimeReport | None, str]:
    """Try one endpoint: (a report naming it, "") if it serves CRI, else (None, reason)."""
    path = socket_path(endpoint)
    kind, detail = inspect_path(path)
    reason = path_reason(kind, detail)
    if reason is not None:
        return None, reason
    with CRIClient(endpoint, timeout=timeout) as cri:
        try:
            version = cri.version()
        except CRIError as exc:
            error = exc
        else:
            return RuntimeReport(
                name=version.runtime_name,
                version=version.runtime_version,
                api_version=version.runtime_api_version,
                endpoint=cri.endpoint,
            ), ""
    # A gRPC server answered (just not CRI): asking it HTTP/1 would only log noise.
    if not isinstance(error, Unimplemented):
        spoke_http = http_probe(path, timeout)
        if spoke_http is not None:
            return None, http_reason(spoke_http)
    return None, cri_reason(error)


def discover_runtime(
    configured: Sequence[str] = (),
    host_root: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> RuntimeReport:
    """Try configured endpoints, then the known sockets (each also under `host_root`);
    the first that serves CRI is chosen, every one tried before it is reported."""
    tried: list[Candidate] = invalid_endpoints(configured)
    for endpoint in candidate_endpoints(configured, host_root):
        found, reason = probe(endpoint, timeout)
        if found is not None:
            return RuntimeReport(
                found.name, found.version, found.api_version, found.endpoint, tuple(tried)
            )
        tried.append(Candidate(endpoint, reason))
    return RuntimeReport(candidates=tuple(tried))
