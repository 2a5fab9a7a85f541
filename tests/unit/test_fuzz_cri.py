"""Property tests of how the agent takes CRI answers: ContainerStatus and
PodSandboxStatus replies with any labels, names and verbose info (JSON of any shape,
or not JSON), the `GET /version` of an HTTP socket, and endpoint names. Nothing
raises; what the reply says comes out unchanged; what it does not say is empty.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.container import (
    CONTAINER_NAME,
    POD_NAME,
    POD_NAMESPACE,
    POD_UID,
    from_container_status,
    from_sandbox_status,
)
from podtrace_agent.cri.endpoints import Engine, classify_http, endpoint_url, socket_path
from podtrace_api.nodetracer import IdentitySource

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["pid", "sandboxID", "runtimeSpec", "image", "linux", "cgroupsPath",
                        "info", "x"])  # fmt: skip
# Verbose info as containerd and CRI-O shape it, with any value where a field is expected.
SHAPED = st.fixed_dictionaries({}, optional={
    "pid": JSON, "sandboxID": JSON, "image": JSON,
    "runtimeSpec": JSON | st.fixed_dictionaries({}, optional={
        "linux": JSON | st.fixed_dictionaries({}, optional={"cgroupsPath": JSON})}),
})  # fmt: skip
INFO = st.one_of(
    st.just({}),
    st.dictionaries(TEXT, TEXT, max_size=3),
    (SHAPED | JSON | st.dictionaries(KEYS, JSON)).map(lambda v: {"info": json.dumps(v)}),
    TEXT.map(lambda t: {"info": t}),
)
LABELS = st.dictionaries(
    st.sampled_from([POD_NAME, POD_NAMESPACE, POD_UID, CONTAINER_NAME, "io.kubernetes.x",
                     "app", "io.kubernetes"]) | TEXT, TEXT, max_size=6)  # fmt: skip


def decoded(raw: dict[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(raw.get("info") or "null")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def check_common(e: Any, info: dict[str, Any]) -> None:
    """What both kinds of reply share: plain, typed, JSON-able output."""
    assert e.source is IdentitySource.CRI
    assert e.pid is None or (type(e.pid) is int and e.pid > 0)
    expected_pid = info.get("pid")
    if type(expected_pid) is int and expected_pid > 0:
        assert e.pid == expected_pid
    assert isinstance(e.cgroups_path, str)
    spec = info.get("runtimeSpec")
    linux = spec.get("linux") if isinstance(spec, dict) else None
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    assert e.cgroups_path == (path if isinstance(path, str) else "")
    assert all(k.startswith("io.kubernetes.") for k in e.labels)
    json.dumps(e.to_dict())


@given(LABELS, TEXT, TEXT, TEXT, TEXT, INFO)
@example({}, "", "", "", "", {"info": json.dumps({"pid": True, "runtimeSpec": [1]})})
def test_container_status_replies(
    labels: dict[str, str], name: str, image: str, image_ref: str, image_id: str,
    info: dict[str, str],
) -> None:  # fmt: skip
    reply = api_pb2.ContainerStatusResponse(
        status=api_pb2.ContainerStatus(
            id="c1", metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=image), image_ref=image_ref, image_id=image_id,
            labels=labels,
        ),
        info=info,
    )  # fmt: skip
    e = from_container_status(reply)
    check_common(e, decoded(info))
    assert (e.pod_name, e.namespace, e.pod_uid) == (
        labels.get(POD_NAME, ""),
        labels.get(POD_NAMESPACE, ""),
        labels.get(POD_UID, ""),
    )
    assert e.container_name == (name or labels.get(CONTAINER_NAME, ""))
    assert (e.image, e.image_id, e.sandbox) == (image, image_id or image_ref, False)
    sandbox_id = decoded(info).get("sandboxID", "")
    assert e.sandbox_id == (sandbox_id if isinstance(sandbox_id, str) else "")


@given(LABELS, TEXT, TEXT, TEXT, INFO)
def test_sandbox_status_replies(labels: dict[str, str], name: str, namespace: str, uid: str,
                                info: dict[str, str]) -> None:  # fmt: skip
    reply = api_pb2.PodSandboxStatusResponse(
        status=api_pb2.PodSandboxStatus(
            id="s1", metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
            labels=labels,
        ),
        info=info,
    )  # fmt: skip
    e = from_sandbox_status(reply)
    check_common(e, decoded(info))
    assert e.pod_name == (name or labels.get(POD_NAME, ""))
    assert e.namespace == (namespace or labels.get(POD_NAMESPACE, ""))
    assert e.pod_uid == (uid or labels.get(POD_UID, ""))
    image = decoded(info).get("image", "")
    assert e.image == (image if isinstance(image, str) else "")
    assert (e.sandbox, e.sandbox_id, e.container_name) == (True, "s1", "")


@given(st.dictionaries(st.sampled_from(["Server", "server", "Api-Version", "Libpod-Api-Version",
                                        "Content-Type"]) | TEXT, TEXT, max_size=4),
       JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200))  # fmt: skip
@example({}, json.dumps({"Components": 5, "Platform": "x"}).encode())
@example({}, json.dumps({"Platform": {"Name": 5}}).encode())
def test_http_version_replies(headers: dict[str, str], body: bytes) -> None:
    found = classify_http(headers, body)
    assert found.engine in Engine and isinstance(found.version, str)


@given(st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=60))
def test_endpoint_names(text: str) -> None:
    try:
        url = endpoint_url(text)
    except ValueError:
        bare = text.removeprefix("unix://")
        assert not bare.startswith("/")
        return
    assert url.startswith("unix:///") and endpoint_url(url) == url
    path = text.removeprefix("unix://")
    assert socket_path(url) == "/" + posixpath.normpath(path).lstrip("/")


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"null", b"{}", b'{"Components": [1, "a"]}'])
def test_http_replies_of_other_shapes(body: bytes) -> None:
    assert classify_http({}, body).engine is Engine.HTTP
