"""The CRD bounds of the kernel-side limits are the BPF program's own numbers."""

from __future__ import annotations

from podtrace_agent.bpf.loader import BccBackend
from podtrace_agent.bpf.wire import C
from podtrace_api import limits
from podtrace_api.containertrace import ContainerTrace
from podtrace_api.crdgen import crd
from podtrace_api.tracingpolicy import TracingPolicy


def test_api_limits_equal_events_h() -> None:
    assert C["PREFIX_MAX"] == limits.OPEN_PREFIX_BYTES
    assert C["MAX_PREFIXES"] == limits.OPEN_PREFIXES_PER_SOURCE
    assert C["MAX_PORTS"] == limits.CONNECT_PORTS_PER_SOURCE
    assert C["MAX_FILENAME"] - 1 == limits.EXEC_FILENAME_BYTES
    assert C["NR_SYSCALLS_MAX"] == limits.SYSCALL_NUMBERS  # the syscall set's bitmap
    assert BccBackend.limits.open_prefix_bytes == limits.OPEN_PREFIX_BYTES


def _observe(kind: type) -> dict:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["observe"]["properties"]


def test_crd_bounds_are_the_limits() -> None:
    for kind in (TracingPolicy, ContainerTrace):
        observe = _observe(kind)
        prefixes = observe["fileOpens"]["properties"]["pathPrefixes"]
        assert prefixes["maxItems"] == limits.OPEN_PREFIXES_PER_SOURCE
        assert prefixes["items"]["maxLength"] == limits.OPEN_PREFIX_BYTES
        assert observe["connects"]["properties"]["ports"]["maxItems"] == (
            limits.CONNECT_PORTS_PER_SOURCE)
    rule = crd(TracingPolicy)["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]["rules"]["items"]["properties"]
    assert rule["execFilenames"]["items"]["maxLength"] == limits.EXEC_FILENAME_BYTES
    assert rule["openPathPrefixes"]["items"]["maxLength"] == limits.OPEN_PREFIX_BYTES
