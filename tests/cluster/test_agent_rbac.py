"""The agent under the ClusterRole of manifests/agent, authenticated with a
ServiceAccount token: every call the agent makes (watching its NodeTracer and its
node's Pods, patching NodeTracer status, writing Events) works, and the role grants
nothing more: no spec writes, no Secrets, no ConfigMaps, no other kinds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from harness.apiserver import LocalAPIServer
from podtrace_agent.cluster.kube import Kube, load_config

REPO = Path(__file__).resolve().parents[2]
NODE = "rbac-node"


@pytest.fixture(scope="module")
def agent_kubeconfig(apiserver: LocalAPIServer, crds_installed: list[str]) -> Path:
    apiserver.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "namespace.yaml"))
    apiserver.kubectl("apply", "-f", str(REPO / "manifests" / "agent" / "rbac.yaml"))
    apiserver.ensure_service_account("rbac-ns")
    apiserver.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({
        "apiVersion": "podtrace.io/v1alpha1", "kind": "NodeTracer",
        "metadata": {"name": NODE}, "spec": {},
    }))
    apiserver.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "rbac-ns"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    token = apiserver.make_token("podtrace-system", "podtrace-agent")
    return apiserver.token_kubeconfig(token, "podtrace-agent")


def test_the_agents_calls_are_allowed(apiserver: LocalAPIServer, agent_kubeconfig: Path) -> None:
    kube = Kube(load_config(str(agent_kubeconfig)), NODE)
    nts = kube.custom.list_cluster_custom_object(
        "podtrace.io", "v1alpha1", "nodetracers", field_selector=f"metadata.name={NODE}")
    assert [n["metadata"]["name"] for n in nts["items"]] == [NODE]
    pods = kube.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")
    assert [p.metadata.name for p in pods.items] == ["p"]
    kube.patch_status({"tracedContainers": 2})
    kube.write_event(
        pod={"namespace": "rbac-ns", "name": "p", "uid": pods.items[0].metadata.uid},
        key=(pods.items[0].metadata.uid, "TracingPolicy/x", "r"), reason="Test",
        type_="Warning", note="rbac test", action="r", count=1,
        first_seen=datetime.now(UTC), related=None,
    )
    kube.write_event(  # the second write of a series is a patch
        pod={"namespace": "rbac-ns", "name": "p", "uid": pods.items[0].metadata.uid},
        key=(pods.items[0].metadata.uid, "TracingPolicy/x", "r"), reason="Test",
        type_="Warning", note="rbac test", action="r", count=2,
        first_seen=datetime.now(UTC), related=None,
    )
    status = json.loads(apiserver.kubectl("get", "nt", NODE, "-o", "json").stdout)["status"]
    assert status["tracedContainers"] == 2


@pytest.mark.parametrize(
    "verb_and_resource",
    [
        ("patch", "nodetracers.podtrace.io", "spec"),  # status only
        ("create", "nodetracers.podtrace.io", ""),
        ("delete", "nodetracers.podtrace.io", ""),
        ("patch", "tracingpolicies.podtrace.io", ""),
        ("get", "secrets", ""),
        ("list", "configmaps", ""),
        ("update", "pods", ""),
        ("delete", "events.events.k8s.io", ""),
        ("create", "events", ""),  # core/v1 events: the agent uses events.k8s.io only
    ],
    ids=lambda v: "-".join(x for x in v if x),
)
def test_nothing_more_is_allowed(
    apiserver: LocalAPIServer, agent_kubeconfig: Path, verb_and_resource: tuple[str, str, str]
) -> None:
    verb, resource, _ = verb_and_resource
    answer = apiserver.kubectl("auth", "can-i", verb, resource, "--all-namespaces",
                               kubeconfig=agent_kubeconfig, check=False)
    assert answer.stdout.strip() == "no", f"the agent may {verb} {resource}"


def test_spec_patch_is_forbidden(agent_kubeconfig: Path) -> None:
    kube = Kube(load_config(str(agent_kubeconfig)), NODE)
    with pytest.raises(ApiException) as err:
        kube.custom.patch_cluster_custom_object(
            "podtrace.io", "v1alpha1", "nodetracers", NODE, {"spec": {"targets": []}})
    assert err.value.status == 403
