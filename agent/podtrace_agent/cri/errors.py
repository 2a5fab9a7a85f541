"""Errors of the CRI client. Every one names the endpoint and the call.

    CRIError                      any failed CRI call (carries endpoint, call, code, details)
    ├── RuntimeUnavailable        nothing answers on the endpoint (socket missing, refused, down)
    ├── CallTimeout               the runtime did not answer within the call's timeout
    ├── NotFound                  the runtime does not know the container, sandbox or image
    └── Unimplemented             the endpoint does not serve this CRI service or method

gRPC status codes are mapped once, in `from_grpc`, so callers branch on types,
never on `grpc.StatusCode`.
"""

from __future__ import annotations

import grpc


class CRIError(Exception):
    """A CRI call failed."""

    def __init__(self, endpoint: str, call: str, code: str, details: str) -> None:
        self.endpoint = endpoint
        self.call = call
        self.code = code
        self.details = details
        super().__init__(f"CRI {call} on {endpoint} failed: {code}: {details}")


class RuntimeUnavailable(CRIError):
    """Nothing answers on the endpoint."""


class CallTimeout(CRIError):
    """The runtime did not answer in time."""


class NotFound(CRIError):
    """The runtime does not know the object asked for."""


class Unimplemented(CRIError):
    """The endpoint does not serve this service or method (e.g. containerd without CRI)."""


_BY_CODE: dict[grpc.StatusCode, type[CRIError]] = {
    grpc.StatusCode.UNAVAILABLE: RuntimeUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: CallTimeout,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
}


def from_grpc(endpoint: str, call: str, error: grpc.RpcError) -> CRIError:
    """The CRIError for a failed gRPC call."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else str(error)) or ""
    cls = _BY_CODE.get(code, CRIError)
    return cls(endpoint, call, code.name, details)
