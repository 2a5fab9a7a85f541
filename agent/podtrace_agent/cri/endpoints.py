"""Pure logic of runtime discovery: which endpoints to try, in which order, and
what to tell the user about each one that cannot be used.

No I/O here: `runtime.py` stats paths, speaks HTTP and CRI, and feeds what it saw
into these functions. Every reason says what is wrong *and* what to change,
because the reasons end up in NodeTracer status, where a user reads them.

    candidate_endpoints((), host_root="/host")[:2] == [
        "unix:///run/containerd/containerd.sock",
        "unix:///host/run/containerd/containerd.sock",
    ]
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from podtrace_api.base import MAX_MESSAGE
from podtrace_api.nodetracer import MAX_RUNTIME_CANDIDATES, RuntimeCandidate, RuntimeStatus

from .errors import CallTimeout, CRIError, RuntimeUnavailable, Unimplemented

UNIX = "unix://"
_MAX_CANDIDATES = MAX_RUNTIME_CANDIDATES  # RuntimeStatus.candidates' bound

# Where runtimes put their socket by default, in the order they are tried: CRI
# runtimes first, then Docker and Podman, which serve no CRI themselves but are
# the sockets people mount by mistake (they are reported with the fix).
KNOWN_SOCKETS: tuple[tuple[str, str], ...] = (
    ("/run/containerd/containerd.sock", "containerd"),
    ("/run/crio/crio.sock", "cri-o"),
    ("/var/run/cri-dockerd.sock", "cri-dockerd"),
    ("/run/k3s/containerd/containerd.sock", "k3s containerd"),
    ("/var/run/docker.sock", "docker"),
    ("/run/podman/podman.sock", "podman"),
)


def endpoint_url(endpoint: str) -> str:
    """`unix://` URL of a socket given as a path or URL.

    endpoint_url("/run/crio/crio.sock") == "unix:///run/crio/crio.sock"
    """
    if endpoint.startswith(UNIX):
        path = endpoint[len(UNIX) :]
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise ValueError(
            f"runtime endpoint {endpoint!r}: expected an absolute socket path or unix:///path"
        )
    if not path.startswith("/"):
        raise ValueError(f"runtime endpoint {endpoint!r}: the socket path must be absolute")
    return UNIX + "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading "//"


def socket_path(endpoint: str) -> str:
    """The filesystem path of a unix endpoint: socket_path("unix:///a.sock") == "/a.sock"."""
    return endpoint_url(endpoint)[len(UNIX) :]


def under_host_root(endpoint: str, host_root: str | None) -> str | None:
    """The endpoint as seen through the host's root mounted at `host_root`, if one is set.

    under_host_root("/run/crio/crio.sock", "/host") == "unix:///host/run/crio/crio.sock"
    """
    if not host_root or not host_root.strip("/"):
        return None
    return endpoint_url(posixpath.join(host_root, socket_path(endpoint).lstrip("/")))


def invalid_endpoints(configured: Sequence[str]) -> list[Candidate]:
    """The configured endpoints that are not unix sockets, with the reason."""
    invalid = []
    for endpoint in configured:
        try:
            endpoint_url(endpoint)
        except ValueError as exc:
            invalid.append(Candidate(endpoint, str(exc)))
    return invalid


def candidate_endpoints(configured: Sequence[str], host_root: str | None) -> list[str]:
    """Every endpoint to try, in order, without duplicates: each configured one,
    then each known socket; each as given, then under the host root. Invalid
    configured endpoints are left out (see `invalid_endpoints`)."""
    bad = {c.endpoint for c in invalid_endpoints(configured)}
    ordered: list[str] = []
    for endpoint in [*(e for e in configured if e not in bad), *(p for p, _ in KNOWN_SOCKETS)]:
        for candidate in (endpoint_url(endpoint), under_host_root(endpoint, host_root)):
            if candidate is not None and candidate not in ordered:
                ordered.append(candidate)
    return ordered


# --- what is at the path -------------------------------------------------------------------


class PathKind(StrEnum):
    MISSING = "missing"
    SOCKET = "socket"
    EMPTY_DIR = "empty-dir"
    DIR = "dir"
    OTHER = "other"  # a regular file, a device, ...
    UNREADABLE = "unreadable"  # stat failed for another reason than ENOENT


def path_reason(kind: PathKind, detail: str = "") -> str | None:
    """Why a path of this kind cannot be a runtime endpoint, or None for a socket."""
    if kind is PathKind.SOCKET:
        return None
    if kind is PathKind.MISSING:
        return "does not exist"
    if kind is PathKind.EMPTY_DIR:
        return (
            "is an empty directory, not a socket: the volume was mounted before the runtime "
            "created its socket (a bind mount of a missing path makes a directory; the known "
            "minikube failure). Mount the socket with hostPath type Socket and restart the agent"
        )
    if kind is PathKind.DIR:
        return "is a directory, not a socket: point --runtime-endpoint at the socket file inside"
    if kind is PathKind.UNREADABLE:
        return f"cannot be inspected ({detail}): run the agent as root"
    return "is not a socket (a regular file or device)"


# --- Docker and Podman: sockets that speak HTTP, not CRI --------------------------------


class Engine(StrEnum):
    DOCKER = "docker"
    PODMAN = "podman"
    HTTP = "http"  # some other HTTP server


@dataclass(frozen=True)
class HTTPEngine:
    """What answered HTTP on a socket."""

    engine: Engine
    version: str = ""


def classify_http(headers: Mapping[str, str], body: bytes) -> HTTPEngine:
    """Tell Docker, Podman and other HTTP servers apart from a `GET /version` reply.

    Podman's Docker-compatible API sends `Libpod-Api-Version` and `Server: Libpod/...`
    and names a "Podman Engine" component; Docker sends `Api-Version` and
    `Server: Docker/...`.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        info = json.loads(body) if body else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    version = str(info.get("Version", ""))
    listed = info.get("Components")  # any JSON value: check its type (test_fuzz_cri.py)
    listed = listed if isinstance(listed, list) else []
    components = [str(c.get("Name", "")) for c in listed if isinstance(c, dict)]
    server = lower.get("server", "")
    if (
        "libpod-api-version" in lower
        or server.startswith("Libpod")
        or any("Podman" in c for c in components)
    ):
        return HTTPEngine(Engine.PODMAN, version or lower.get("libpod-api-version", ""))
    platform = info.get("Platform")
    platform_name = str(platform.get("Name", "")) if isinstance(platform, dict) else ""
    if "api-version" in lower or server.startswith("Docker") or "Docker" in platform_name:
        return HTTPEngine(Engine.DOCKER, version)
    return HTTPEngine(Engine.HTTP)


def http_reason(found: HTTPEngine) -> str:
    """The reason (with the fix) for a socket that answered HTTP instead of CRI."""
    version = f" {found.version}" if found.version else ""
    if found.engine is Engine.DOCKER:
        return (
            f"Docker Engine{version} API, not a CRI endpoint: Docker serves no CRI (dockershim "
            "left Kubernetes in 1.24). Point --runtime-endpoint at the node's CRI socket: "
            "cri-dockerd's unix:///var/run/cri-dockerd.sock, or the containerd that kubelet uses"
        )
    if found.engine is Engine.PODMAN:
        return (
            f"Podman{version} API, not a CRI endpoint: Podman serves no CRI. Point "
            "--runtime-endpoint at the node's CRI socket (CRI-O: unix:///run/crio/crio.sock)"
        )
    return "answers HTTP, not CRI gRPC: point --runtime-endpoint at the node's CRI socket"


# --- CRI failures --------------------------------------------------------------------------


def cri_reason(error: CRIError) -> str:
    """The reason (with the fix) for a socket where the CRI Version call failed."""
    details = error.details
    if isinstance(error, RuntimeUnavailable):
        low = details.lower()
        if "permission denied" in low:
            return "permission denied on the socket: run the agent as root"
        if "connection refused" in low:
            return (
                "connection refused: nothing listens on the socket (the runtime is not "
                "running, or the socket is stale)"
            )
        return f"unavailable: {details}"
    if isinstance(error, Unimplemented):
        return (
            f"serves gRPC but not CRI runtime.v1 ({details}): containerd with its CRI plugin "
            'disabled (remove "cri" from disabled_plugins in /etc/containerd/config.toml, '
            "the default of Docker's containerd), or a runtime too old for Kubernetes 1.26+"
        )
    if isinstance(error, CallTimeout):
        return f"no answer to the CRI Version call in time ({details})"
    return f"CRI Version failed: {error.code}: {details}"


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """An endpoint that was tried and not used."""

    endpoint: str
    reason: str


@dataclass(frozen=True)
class RuntimeReport:
    """The outcome of runtime discovery; maps onto NodeTracer's RuntimeStatus."""

    name: str = ""
    version: str = ""
    api_version: str = ""
    endpoint: str = ""
    candidates: tuple[Candidate, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.endpoint)

    @property
    def message(self) -> str:
        """One line for a condition message: what is used, or why nothing is."""
        if self.found:
            return f"{self.name} {self.version} (CRI {self.api_version}) at {self.endpoint}"
        present = [c for c in self.candidates if c.reason != "does not exist"]
        if not present:
            return (
                f"no container runtime socket found ({len(self.candidates)} paths tried): mount "
                "the runtime's socket into the agent (e.g. /run/containerd/containerd.sock, "
                "or the host's / at /host with --host-root /host) or set --runtime-endpoint"
            )
        return "no usable CRI endpoint: " + "; ".join(f"{c.endpoint} {c.reason}" for c in present)

    def to_status(self) -> RuntimeStatus:
        """NodeTracer's RuntimeStatus, bounded to what the CRD accepts."""
        return RuntimeStatus(
            name=self.name[:64],
            version=self.version[:128],
            api_version=self.api_version[:64],
            endpoint=self.endpoint[:512],
            candidates=[
                RuntimeCandidate(endpoint=c.endpoint[:512], reason=c.reason[:MAX_MESSAGE])
                for c in self.candidates[:_MAX_CANDIDATES]
            ],
        )
