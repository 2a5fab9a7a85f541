"""The cluster tier's harness itself: a real apiserver, our kubectl, RBAC with real tokens."""

from __future__ import annotations

import json

from harness.apiserver import LocalAPIServer
from harness.k8s_binaries import K8S_VERSION


def test_apiserver_and_kubectl_report_the_pinned_version(apiserver: LocalAPIServer) -> None:
    assert apiserver.get_json("/version")["gitVersion"] == K8S_VERSION
    versions = json.loads(apiserver.kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == K8S_VERSION
    assert versions["serverVersion"]["gitVersion"] == K8S_VERSION


def test_kubectl_creates_and_reads_a_configmap(apiserver: LocalAPIServer) -> None:
    apiserver.kubectl("create", "namespace", "harness-cm")
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "greeting", "namespace": "harness-cm"},
        "data": {"hello": "world"},
    }
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(configmap))
    got = json.loads(
        apiserver.kubectl("get", "-n", "harness-cm", "cm/greeting", "-o", "json").stdout
    )
    assert got["data"] == {"hello": "world"}


def test_serviceaccount_token_authenticates_and_rbac_forbids_secrets(
    apiserver: LocalAPIServer,
) -> None:
    apiserver.ensure_service_account("harness-rbac", "reader")
    token = apiserver.make_token("harness-rbac", "reader")
    as_sa = apiserver.token_kubeconfig(token, "harness-rbac-reader")

    whoami = json.loads(apiserver.kubectl("auth", "whoami", "-o", "json", kubeconfig=as_sa).stdout)
    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:harness-rbac:reader"

    denied = apiserver.kubectl(
        "get", "secrets", "-n", "harness-rbac", kubeconfig=as_sa, check=False
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr


def test_crds_are_established_and_served(
    apiserver: LocalAPIServer, crds_installed: list[str]
) -> None:
    assert crds_installed, "crds/ applied nothing"
    for crd in crds_installed:
        # A CRD's name is <plural>.<group>, which kubectl takes as a resource type.
        apiserver.kubectl("get", crd, "--all-namespaces")
