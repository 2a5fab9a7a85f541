"""The client's timeouts and error mapping, against an in-process gRPC server on a
unix socket (the same transport a runtime uses; the real containerd is in
tests/runtime)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from podtrace_agent.cri import api_pb2, api_pb2_grpc
from podtrace_agent.cri.client import CRIClient
from podtrace_agent.cri.errors import CallTimeout, NotFound, RuntimeUnavailable, Unimplemented


class Runtime(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self) -> None:
        self.release = threading.Event()

    def Version(self, request, context):  # gRPC's method names
        return api_pb2.VersionResponse(
            version=request.version,
            runtime_name="fake",
            runtime_version="0",
            runtime_api_version="v1",
        )

    def ContainerStatus(self, request, context):
        if request.container_id == "slow":
            self.release.wait(5)
            return api_pb2.ContainerStatusResponse()
        context.abort(grpc.StatusCode.NOT_FOUND, f"container {request.container_id!r}: not found")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Runtime]]:
    runtime = Runtime()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime, srv)
    endpoint = f"unix://{tmp_path}/cri.sock"
    srv.add_insecure_port(endpoint)
    srv.start()
    yield endpoint, runtime
    runtime.release.set()
    srv.stop(None)


def test_version(server: tuple[str, Runtime]) -> None:
    with CRIClient(server[0]) as cri:
        reply = cri.version()
    assert (reply.runtime_name, reply.runtime_api_version, reply.version) == ("fake", "v1", "v1")


def test_not_found_names_endpoint_and_call(server: tuple[str, Runtime]) -> None:
    endpoint, _ = server
    with CRIClient(endpoint) as cri, pytest.raises(NotFound) as err:
        cri.container_status("abc")
    assert err.value.endpoint == endpoint and err.value.call == "ContainerStatus"
    assert str(err.value) == (
        f"CRI ContainerStatus on {endpoint} failed: NOT_FOUND: container 'abc': not found"
    )


def test_every_call_has_a_timeout(server: tuple[str, Runtime]) -> None:
    with CRIClient(server[0], timeout=0.2) as cri, pytest.raises(CallTimeout, match="Deadline"):
        cri.container_status("slow")


def test_a_method_the_server_lacks(server: tuple[str, Runtime]) -> None:
    with CRIClient(server[0]) as cri, pytest.raises(Unimplemented):
        cri.list_pod_sandboxes()


def test_nothing_listening(tmp_path: Path) -> None:
    with CRIClient(f"{tmp_path}/none.sock") as cri, pytest.raises(RuntimeUnavailable) as err:
        cri.version()
    assert err.value.endpoint == f"unix://{tmp_path}/none.sock" and err.value.call == "Version"


def test_only_methods_of_the_proto() -> None:
    with CRIClient("/nonexistent.sock") as cri, pytest.raises(ValueError, match="not a method"):
        cri.call("Exec", api_pb2.VersionRequest())
