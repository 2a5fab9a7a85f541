"""A CRI client: one gRPC channel to one runtime endpoint, a timeout on every call.

    with CRIClient("unix:///run/containerd/containerd.sock") as cri:
        cri.version().runtime_name                      # "containerd"
        cri.container_status(container_id).status.metadata.name

Failures raise the types of `errors` (RuntimeUnavailable, CallTimeout, NotFound, ...),
each naming the endpoint and the call. The client is passed to whatever needs it
(discovery, the enricher); there is no global one.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf.message import Message

from . import api_pb2, api_pb2_grpc
from .endpoints import endpoint_url
from .errors import from_grpc

DEFAULT_TIMEOUT_S = 2.0
# Kubelet's limit: ListContainers on a busy node exceeds gRPC's default 4 MiB.
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    # After a runtime restart, reconnect within a second or two instead of
    # gRPC's default backoff of up to two minutes, so enrichment recovers quickly.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

_SERVICES = {
    name: api_pb2.DESCRIPTOR.services_by_name[name] for name in ("RuntimeService", "ImageService")
}


class CRIClient:
    """CRI runtime.v1 calls against one endpoint over one channel."""

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = endpoint_url(endpoint)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.endpoint, options=_CHANNEL_OPTIONS)
        self._stubs: dict[str, Any] = {
            "RuntimeService": api_pb2_grpc.RuntimeServiceStub(self._channel),
            "ImageService": api_pb2_grpc.ImageServiceStub(self._channel),
        }

    # --- the agent's read calls ------------------------------------------------------------

    def version(self, *, timeout: float | None = None) -> api_pb2.VersionResponse:
        return self.call("Version", api_pb2.VersionRequest(version="v1"), timeout=timeout)

    def list_containers(
        self, filter: api_pb2.ContainerFilter | None = None, *, timeout: float | None = None
    ) -> list[api_pb2.Container]:
        request = api_pb2.ListContainersRequest(filter=filter)
        return list(self.call("ListContainers", request, timeout=timeout).containers)

    def container_status(
        self, container_id: str, *, verbose: bool = True, timeout: float | None = None
    ) -> api_pb2.ContainerStatusResponse:
        request = api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self.call("ContainerStatus", request, timeout=timeout)

    def list_pod_sandboxes(
        self, filter: api_pb2.PodSandboxFilter | None = None, *, timeout: float | None = None
    ) -> list[api_pb2.PodSandbox]:
        request = api_pb2.ListPodSandboxRequest(filter=filter)
        return list(self.call("ListPodSandbox", request, timeout=timeout).items)

    def pod_sandbox_status(
        self, sandbox_id: str, *, verbose: bool = True, timeout: float | None = None
    ) -> api_pb2.PodSandboxStatusResponse:
        request = api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose)
        return self.call("PodSandboxStatus", request, timeout=timeout)

    def list_images(self, *, timeout: float | None = None) -> list[api_pb2.Image]:
        return list(self.call("ListImages", api_pb2.ListImagesRequest(), timeout=timeout).images)

    def image_status(self, image: str, *, timeout: float | None = None) -> api_pb2.Image | None:
        """The image known by this name or ID, or None (CRI answers "not found" with no image)."""
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image))
        reply = self.call("ImageStatus", request, timeout=timeout)
        return reply.image if reply.HasField("image") else None

    # --- any call of the proto (the tests' sandbox and container lifecycle) -----------------

    def call(self, method: str, request: Message, *, timeout: float | None = None) -> Any:
        """Call `method` of RuntimeService or ImageService; raises a CRIError on failure."""
        service = next((s for s, d in _SERVICES.items() if method in d.methods_by_name), None)
        if service is None:
            raise ValueError(f"{method} is not a method of podtrace's CRI proto")
        rpc = getattr(self._stubs[service], method)
        try:
            return rpc(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise from_grpc(self.endpoint, method, exc) from None

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CRIClient({self.endpoint!r}, timeout={self.timeout})"
