"""CRI status replies → Enrichment, with the verbose info containerd sends."""

from __future__ import annotations

import json

from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.container import (
    from_container_status,
    from_path_identity,
    from_sandbox_status,
    verbose_info,
)
from podtrace_agent.identity import parse
from podtrace_api.nodetracer import IdentitySource

UID = "70a5467d-5966-4414-b0b6-08030ce40813"
CID = "1f8a396b08216d33bf678ba50a93e7e582499f3db430719f6907fdfb83d234c6"
SID = "94ee1effa83ad4f7f050dfb8544da943ba58804d658fc3047c1af830fe94e401"
POD_LABELS = {
    "io.kubernetes.pod.name": "web-0",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.pod.uid": UID,
}


def container_reply(info: dict[str, object] | None = None) -> api_pb2.ContainerStatusResponse:
    """A verbose ContainerStatus reply shaped like containerd 1.6's (info trimmed)."""
    info = info if info is not None else {
        "sandboxID": SID,
        "pid": 19303,
        "snapshotter": "overlayfs",
        "runtimeType": "io.containerd.runc.v2",
        "runtimeSpec": {"linux": {"cgroupsPath": f"/kubepods/besteffort/pod{UID}/{CID}"}},
    }  # fmt: skip
    return api_pb2.ContainerStatusResponse(
        status=api_pb2.ContainerStatus(
            id=CID,
            metadata=api_pb2.ContainerMetadata(name="app"),
            state=api_pb2.CONTAINER_RUNNING,
            image=api_pb2.ImageSpec(image="localhost/podtrace-test/busybox:1"),
            image_ref="sha256:6f26",
            labels={**POD_LABELS, "io.kubernetes.container.name": "app", "other": "x"},
        ),
        info={"info": json.dumps(info)},
    )


def test_container() -> None:
    e = from_container_status(container_reply())
    assert e.source is IdentitySource.CRI
    assert (e.pod_name, e.namespace, e.pod_uid, e.container_name) == ("web-0", "shop", UID, "app")
    assert (e.image, e.image_id) == ("localhost/podtrace-test/busybox:1", "sha256:6f26")
    assert e.sandbox is False and e.sandbox_id == SID
    assert e.pid == 19303
    assert e.cgroups_path == f"/kubepods/besteffort/pod{UID}/{CID}"
    assert e.labels == {**POD_LABELS, "io.kubernetes.container.name": "app"}
    assert e.reason == ""


def test_image_id_prefers_the_newer_field() -> None:
    reply = container_reply()
    reply.status.image_id = "sha256:abcd"
    assert from_container_status(reply).image_id == "sha256:abcd"


def test_container_without_verbose_info() -> None:
    reply = container_reply()
    reply.info.clear()
    e = from_container_status(reply)
    assert (e.pid, e.cgroups_path, e.sandbox_id) == (None, "", "")
    assert e.pod_name == "web-0"


def test_verbose_info_tolerates_what_is_not_json_or_not_an_object() -> None:
    assert verbose_info({"info": "not json"}) == {}
    assert verbose_info({"info": "[1, 2]"}) == {}
    assert verbose_info({}) == {}


def test_odd_types_in_verbose_info_are_ignored() -> None:
    e = from_container_status(container_reply({"pid": "12", "runtimeSpec": {"linux": 3}}))
    assert (e.pid, e.cgroups_path) == (None, "")


def test_sandbox() -> None:
    reply = api_pb2.PodSandboxStatusResponse(
        status=api_pb2.PodSandboxStatus(
            id=SID,
            metadata=api_pb2.PodSandboxMetadata(name="web-0", namespace="shop", uid=UID),
            labels={**POD_LABELS, "app": "web"},
        ),
        info={"info": json.dumps({"pid": 19152, "image": "localhost/podtrace-test/busybox:1"})},
    )
    e = from_sandbox_status(reply)
    assert e.source is IdentitySource.CRI
    assert e.sandbox is True and e.sandbox_id == SID and e.container_id == SID
    assert (e.pod_name, e.namespace, e.pod_uid, e.container_name) == ("web-0", "shop", UID, "")
    assert e.image == "localhost/podtrace-test/busybox:1"
    assert e.pid == 19152
    assert e.labels == POD_LABELS


def test_path_identity_is_marked_and_carries_the_reason() -> None:
    path = f"/kubepods/besteffort/pod{UID}/{CID}"
    e = from_path_identity(CID, parse(path), path, "runtime unreachable: ...")
    assert e.source is IdentitySource.CGROUP_PATH
    assert e.reason == "runtime unreachable: ..."
    assert (e.pod_uid, e.container_id) == (UID, CID)
    assert (e.pod_name, e.container_name, e.sandbox) == ("", "", None)


def test_a_path_that_names_no_pod_leaves_nothing_known() -> None:
    e = from_path_identity(CID, parse("/system.slice/x"), "/system.slice/x", "runtime down")
    assert e.source is None
    assert e.reason == "runtime down; cgroup path /system.slice/x names no pod"


def test_to_dict_is_plain_data() -> None:
    d = from_container_status(container_reply()).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["identity"] == "cri" and d["pod"] == "web-0" and d["container"] == "app"
