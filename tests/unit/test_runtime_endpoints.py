"""Runtime discovery's pure logic: candidate order, and the reason (with the fix)
for every kind of endpoint that cannot be used."""

from __future__ import annotations

import json

import pytest

from podtrace_agent.cri.endpoints import (
    Candidate,
    Engine,
    HTTPEngine,
    PathKind,
    RuntimeReport,
    candidate_endpoints,
    classify_http,
    cri_reason,
    endpoint_url,
    http_reason,
    invalid_endpoints,
    path_reason,
    under_host_root,
)
from podtrace_agent.cri.errors import (
    CallTimeout,
    CRIError,
    NotFound,
    RuntimeUnavailable,
    Unimplemented,
)
from podtrace_api.nodetracer import MAX_RUNTIME_CANDIDATES

DEFAULTS = [
    "unix:///run/containerd/containerd.sock",
    "unix:///run/crio/crio.sock",
    "unix:///var/run/cri-dockerd.sock",
    "unix:///run/k3s/containerd/containerd.sock",
    "unix:///var/run/docker.sock",
    "unix:///run/podman/podman.sock",
]


def test_defaults_in_order_without_host_root() -> None:
    assert candidate_endpoints((), None) == DEFAULTS


def test_configured_first_then_defaults_each_also_under_the_host_root() -> None:
    got = candidate_endpoints(["/var/run/custom.sock"], "/host")
    assert got[:4] == [
        "unix:///var/run/custom.sock",
        "unix:///host/var/run/custom.sock",
        "unix:///run/containerd/containerd.sock",
        "unix:///host/run/containerd/containerd.sock",
    ]
    assert got[2::2] == DEFAULTS
    assert got[3::2] == [d.replace("unix://", "unix:///host") for d in DEFAULTS]


def test_duplicates_are_tried_once() -> None:
    got = candidate_endpoints(
        ["unix:///run/containerd/containerd.sock", "/run/containerd//containerd.sock"], "/"
    )
    assert got == DEFAULTS


@pytest.mark.parametrize("root", [None, "", "/", "//"])
def test_no_host_root_means_no_prefixed_candidates(root: str | None) -> None:
    assert under_host_root("/run/crio/crio.sock", root) is None


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("/run/crio/crio.sock", "unix:///run/crio/crio.sock"),
        ("unix:///run/crio/crio.sock", "unix:///run/crio/crio.sock"),
        ("unix:///run/crio/../crio/crio.sock", "unix:///run/crio/crio.sock"),
    ],
)
def test_endpoint_url(given: str, url: str) -> None:
    assert endpoint_url(given) == url


@pytest.mark.parametrize("bad", ["tcp://10.0.0.1:1234", "run/crio.sock", "unix://relative.sock"])
def test_endpoint_url_rejects_what_is_not_an_absolute_unix_socket(bad: str) -> None:
    with pytest.raises(ValueError, match="runtime endpoint"):
        endpoint_url(bad)


def test_invalid_configured_endpoints_are_reported_not_tried() -> None:
    configured = ["tcp://10.0.0.1:1234", "/run/x.sock"]
    assert candidate_endpoints(configured, None)[0] == "unix:///run/x.sock"
    (bad,) = invalid_endpoints(configured)
    assert bad.endpoint == "tcp://10.0.0.1:1234"
    assert "expected an absolute socket path or unix:///path" in bad.reason


def test_a_socket_has_no_path_problem() -> None:
    assert path_reason(PathKind.SOCKET) is None


def test_empty_directory_is_called_out_with_the_fix() -> None:
    reason = path_reason(PathKind.EMPTY_DIR)
    assert reason is not None
    assert "empty directory" in reason and "minikube" in reason
    assert "hostPath type Socket" in reason


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (PathKind.MISSING, "does not exist"),
        (PathKind.DIR, "is a directory"),
        (PathKind.OTHER, "is not a socket"),
        (PathKind.UNREADABLE, "Permission denied"),
    ],
)
def test_path_reasons(kind: PathKind, words: str) -> None:
    assert words in (path_reason(kind, "Permission denied") or "")


# `GET /version` replies as Docker 24 and Podman 4 send them (headers trimmed).
DOCKER_HEADERS = {
    "Api-Version": "1.43",
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Server": "Docker/24.0.7 (linux)",
    "Content-Type": "application/json",
}
DOCKER_BODY = json.dumps({
    "Platform": {"Name": "Docker Engine - Community"},
    "Components": [{"Name": "Engine", "Version": "24.0.7"}, {"Name": "containerd"}],
    "Version": "24.0.7", "ApiVersion": "1.43", "Os": "linux",
}).encode()  # fmt: skip
PODMAN_HEADERS = {
    "Api-Version": "1.41",
    "Libpod-Api-Version": "4.3.1",
    "Server": "Libpod/4.3.1 (linux)",
    "Content-Type": "application/json",
}
PODMAN_BODY = json.dumps({
    "Platform": {"Name": "linux/amd64/debian-12"},
    "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}],
    "Version": "4.3.1", "ApiVersion": "1.41",
}).encode()  # fmt: skip


def test_docker_is_recognised() -> None:
    assert classify_http(DOCKER_HEADERS, DOCKER_BODY) == HTTPEngine(Engine.DOCKER, "24.0.7")


def test_podman_is_recognised_although_it_mimics_docker() -> None:
    assert classify_http(PODMAN_HEADERS, PODMAN_BODY) == HTTPEngine(Engine.PODMAN, "4.3.1")


def test_docker_by_headers_alone_when_the_body_is_not_json() -> None:
    assert classify_http({"api-version": "1.43"}, b"<html>").engine is Engine.DOCKER


def test_some_other_http_server() -> None:
    assert classify_http({"Server": "nginx"}, b"[]") == HTTPEngine(Engine.HTTP)


def test_docker_reason_names_the_fix() -> None:
    reason = http_reason(HTTPEngine(Engine.DOCKER, "24.0.7"))
    assert reason.startswith("Docker Engine 24.0.7 API, not a CRI endpoint")
    assert "cri-dockerd" in reason and "--runtime-endpoint" in reason


def test_podman_reason_names_the_fix() -> None:
    reason = http_reason(HTTPEngine(Engine.PODMAN, "4.3.1"))
    assert reason.startswith("Podman 4.3.1 API, not a CRI endpoint")
    assert "crio.sock" in reason


E = "unix:///run/containerd/containerd.sock"


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (RuntimeUnavailable(E, "Version", "UNAVAILABLE", "connect: Connection refused (111)"),
         "connection refused: nothing listens"),
        (RuntimeUnavailable(E, "Version", "UNAVAILABLE", "connect: Permission denied (13)"),
         "run the agent as root"),
        (Unimplemented(E, "Version", "UNIMPLEMENTED",
                       "unknown service runtime.v1.RuntimeService"),
         'remove "cri" from disabled_plugins'),
        (CallTimeout(E, "Version", "DEADLINE_EXCEEDED", "Deadline Exceeded"), "in time"),
        (NotFound(E, "Version", "NOT_FOUND", "x"), "CRI Version failed: NOT_FOUND"),
    ],
)  # fmt: skip
def test_cri_reasons(error: CRIError, words: str) -> None:
    assert words in cri_reason(error)


def test_error_names_endpoint_and_call() -> None:
    error = CallTimeout(E, "ContainerStatus", "DEADLINE_EXCEEDED", "Deadline Exceeded")
    assert str(error) == f"CRI ContainerStatus on {E} failed: DEADLINE_EXCEEDED: Deadline Exceeded"


def test_report_of_a_found_runtime_maps_onto_runtime_status() -> None:
    report = RuntimeReport(
        "containerd", "1.6.20", "v1", E, (Candidate("unix:///x.sock", "does not exist"),)
    )
    assert report.found
    assert report.message == f"containerd 1.6.20 (CRI v1) at {E}"
    assert report.to_status().to_wire() == {
        "name": "containerd",
        "version": "1.6.20",
        "apiVersion": "v1",
        "endpoint": E,
        "candidates": [{"endpoint": "unix:///x.sock", "reason": "does not exist"}],
    }


def test_report_when_nothing_exists_says_what_to_mount() -> None:
    report = RuntimeReport(candidates=tuple(Candidate(e, "does not exist") for e in DEFAULTS))
    assert not report.found
    assert report.message.startswith("no container runtime socket found (6 paths tried)")
    assert "--host-root /host" in report.message


def test_report_when_something_exists_names_only_what_exists() -> None:
    report = RuntimeReport(
        candidates=(
            Candidate(DEFAULTS[0], "does not exist"),
            Candidate(DEFAULTS[4], "Docker Engine 24.0.7 API, not a CRI endpoint: ..."),
        )
    )
    assert report.message == (
        f"no usable CRI endpoint: {DEFAULTS[4]} Docker Engine 24.0.7 API, not a CRI endpoint: ..."
    )


def test_status_is_bounded_like_the_crd() -> None:
    many = tuple(Candidate(f"unix:///s{i}.sock", "x" * 5000) for i in range(40))
    status = RuntimeReport(candidates=many).to_status()
    assert len(status.candidates) == MAX_RUNTIME_CANDIDATES
    # Clipped to the CRD's bound, marked as cut.
    assert all(len(c.reason) == 512 and c.reason.endswith("...") for c in status.candidates)
