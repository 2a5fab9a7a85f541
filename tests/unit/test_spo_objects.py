"""SPO SeccompProfile objects from a trace's profiles (spo.py): names, labels, spec, scope,
and which listed objects are orphans."""

from __future__ import annotations

import doctest
import json
import re

import pytest

from podtrace_operator import spo
from podtrace_operator.seccomp import profile_files
from podtrace_operator.spo import SpoApi, api_of, object_name, orphans, seccomp_profiles, trim

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
MANAGED = {"app.kubernetes.io/managed-by": "podtrace-operator"}
CLUSTER, NAMESPACED = SpoApi(namespaced=False), SpoApi(namespaced=True)


def test_doctests() -> None:
    result = doctest.testmod(spo)
    assert result.attempted > 0 and result.failed == 0


def build(api: SpoApi, files: dict[str, str], trace: str = "rec") -> list[dict]:
    return seccomp_profiles(api, files, namespace="shop", trace=trace, trace_uid="u-1",
                            owner_api_version="podtrace.io/v1alpha1",
                            managed_by=MANAGED)  # fmt: skip


def test_one_object_per_container_with_the_configmap_profile_as_its_spec() -> None:
    files = profile_files({"web": ["read", "write"], "sidecar": ["futex"]}, "SCMP_ACT_ERRNO",
                          ["amd64"])  # fmt: skip
    objs = build(CLUSTER, files)
    assert [o["metadata"]["name"] for o in objs] == ["shop.rec.sidecar", "shop.rec.web"]
    for obj, key in zip(objs, ["sidecar.json", "web.json"], strict=True):
        assert obj["apiVersion"] == "security-profiles-operator.x-k8s.io/v1"
        assert obj["kind"] == "SeccompProfile"
        assert obj["spec"] == json.loads(files[key])  # exactly the ConfigMap's profile
        assert set(obj["spec"]) == {"defaultAction", "architectures", "syscalls"}
    web = objs[1]
    assert web["spec"]["syscalls"] == [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]
    assert web["metadata"]["labels"] == {
        **MANAGED, "podtrace.io/trace": "rec", "podtrace.io/trace-namespace": "shop",
        "podtrace.io/container": "web",
    }  # fmt: skip


def test_cluster_scoped_has_no_owner_namespaced_is_owned_by_the_trace() -> None:
    files = profile_files({"web": ["read"]}, "SCMP_ACT_ERRNO", ["amd64"])
    (cluster,) = build(CLUSTER, files)
    assert "namespace" not in cluster["metadata"]
    assert "ownerReferences" not in cluster["metadata"]
    (ns,) = build(NAMESPACED, files)
    assert ns["metadata"]["name"] == "rec.web"
    assert ns["metadata"]["namespace"] == "shop"
    assert ns["metadata"]["ownerReferences"] == [{
        "apiVersion": "podtrace.io/v1alpha1", "kind": "ContainerTrace", "name": "rec",
        "uid": "u-1"}]  # fmt: skip


def test_a_profile_spanning_both_byte_orders_has_no_spo_form() -> None:
    files = profile_files({"web": ["read"]}, "SCMP_ACT_ERRNO", ["amd64", "s390x"])
    assert "archMap" in json.loads(files["web.json"])
    assert build(CLUSTER, files) == []


def test_names_of_different_tenants_never_meet() -> None:
    """With dashes, namespace a-b's trace c and namespace a's trace b-c would share one."""
    assert object_name("a-b", "c", "x", namespaced=False) != object_name(
        "a", "b-c", "x", namespaced=False)  # fmt: skip


@pytest.mark.parametrize("trace", ["r" * 253, "a." * 120 + "b", "x" * 240 + "-y" * 6])
def test_long_names_are_trimmed_to_valid_names_with_a_hash(trace: str) -> None:
    name = object_name("n" * 63, trace, "c" * 63, namespaced=False)
    assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name
    other = object_name("n" * 63, trace, "c" * 62 + "d", namespaced=False)
    assert name != other  # the hash is of the whole name, not of the kept prefix
    label = trim(trace, 63)
    assert len(label) <= 63 and LABEL_VALUE.match(label), label
    (obj,) = build(CLUSTER, profile_files({"web": ["read"]}, "SCMP_ACT_ERRNO", ["amd64"]),
                   trace=trace)  # fmt: skip
    assert obj["metadata"]["labels"]["podtrace.io/trace"] == label


def test_the_crd_says_scope_and_whether_v1_is_served() -> None:
    def crd(scope: str, *versions: tuple[str, bool]) -> dict:
        return {"spec": {"scope": scope,
                         "versions": [{"name": n, "served": s} for n, s in versions]}}  # fmt: skip

    assert api_of(crd("Cluster", ("v1", True))) == CLUSTER
    assert api_of(crd("Namespaced", ("v1beta1", True), ("v1", True))) == NAMESPACED
    assert api_of(crd("Cluster", ("v1beta1", True), ("v1", False))) is None
    assert api_of({}) is None
    assert CLUSTER.path("shop") == "/apis/security-profiles-operator.x-k8s.io/v1/seccompprofiles"
    assert NAMESPACED.path("shop", "rec.web") == (
        "/apis/security-profiles-operator.x-k8s.io/v1/namespaces/shop/seccompprofiles/rec.web")


def test_orphans_are_the_objects_of_traces_gone() -> None:
    long_trace = "t" * 100
    listed = [
        obj for files in [profile_files({"web": ["read"]}, "SCMP_ACT_ERRNO", ["amd64"])]
        for trace in ["kept", "gone", long_trace]
        for obj in build(CLUSTER, files, trace=trace)
    ]  # fmt: skip
    assert orphans(listed, [("shop", "kept"), ("other", "gone"), ("shop", long_trace)]) == [
        ("", "shop.gone.web")]  # fmt: skip
    ns_listed = build(NAMESPACED, profile_files({"web": ["read"]}, "SCMP_ACT_ERRNO", ["amd64"]))
    assert orphans(ns_listed, []) == [("shop", "rec.web")]
