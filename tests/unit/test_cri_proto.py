"""The committed CRI stubs are what `make proto` generates from api.proto, and the
proto stays wire-compatible with the upstream CRI runtime.v1 API."""

from __future__ import annotations

from pathlib import Path

import pytest

from podtrace_agent.cri import api_pb2, protogen


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    for generated in protogen.generate(tmp_path):
        committed = protogen.PACKAGE_DIR / generated.name
        assert committed.read_text() == generated.read_text(), (
            f"{committed.name} is stale: run `make proto` and commit the result"
        )


def test_package_and_services_are_upstream_names() -> None:
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    runtime = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    images = api_pb2.DESCRIPTOR.services_by_name["ImageService"]
    assert {"Version", "ListContainers", "ContainerStatus", "ListPodSandbox",
            "PodSandboxStatus"} <= set(runtime.methods_by_name)  # fmt: skip
    assert {"ListImages", "ImageStatus"} <= set(images.methods_by_name)


# Field numbers podtrace relies on, as declared in k8s.io/cri-api
# pkg/apis/runtime/v1/api.proto. A renumbering here would still compile and
# silently read the wrong field from a real runtime.
UPSTREAM_FIELDS = {
    "VersionResponse": {"version": 1, "runtime_name": 2, "runtime_version": 3,
                        "runtime_api_version": 4},
    "ContainerStatusRequest": {"container_id": 1, "verbose": 2},
    "ContainerStatusResponse": {"status": 1, "info": 2},
    "ContainerStatus": {"id": 1, "metadata": 2, "state": 3, "image": 8, "image_ref": 9,
                        "labels": 12, "annotations": 13, "image_id": 17},
    "ContainerMetadata": {"name": 1, "attempt": 2},
    "ImageSpec": {"image": 1, "annotations": 2, "user_specified_image": 18},
    "Container": {"id": 1, "pod_sandbox_id": 2, "metadata": 3, "image": 4, "image_ref": 5,
                  "state": 6, "labels": 8, "image_id": 10},
    "PodSandboxStatusRequest": {"pod_sandbox_id": 1, "verbose": 2},
    "PodSandboxStatusResponse": {"status": 1, "info": 2},
    "PodSandboxStatus": {"id": 1, "metadata": 2, "state": 3, "labels": 7, "annotations": 8},
    "PodSandboxMetadata": {"name": 1, "uid": 2, "namespace": 3, "attempt": 4},
    "PodSandbox": {"id": 1, "metadata": 2, "state": 3, "labels": 5},
    "LinuxPodSandboxConfig": {"cgroup_parent": 1, "security_context": 2},
    "PodSandboxConfig": {"metadata": 1, "log_directory": 3, "labels": 6, "annotations": 7,
                         "linux": 8},
    "ContainerConfig": {"metadata": 1, "image": 2, "command": 3, "args": 4, "labels": 9,
                        "annotations": 10, "log_path": 11, "linux": 15},
    "NamespaceOption": {"network": 1, "pid": 2, "ipc": 3},
    "Image": {"id": 1, "repo_tags": 2, "repo_digests": 3, "size": 4},
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(UPSTREAM_FIELDS))
def test_field_numbers_are_upstream(message: str) -> None:
    fields = api_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name
    assert {name: fields[name].number for name in UPSTREAM_FIELDS[message]} == UPSTREAM_FIELDS[
        message
    ]
