"""The operator under the ClusterRole and the Lease Role of manifests/base,
authenticated with a ServiceAccount token from the TokenRequest API: every path it
takes (watching, the Lease, NodeTracer create/patch/delete, status, ConfigMaps,
Events) works, the ClusterRole grants nothing on users' objects beyond reading
them and their status, and the Lease is one object of podtrace-system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from operator_helpers import (
    REPO,
    apply,
    events_about,
    get,
    namespace,
    node,
    nodetracer,
    operator_role_kubeconfig,
    pod,
    policy,
    reasons,
    report_as_agent,
    running,
    trace,
    wait_for,
    wait_targets,
)

from harness.apiserver import LocalAPIServer
from podtrace_api.syscalls import number_of
from podtrace_api.syscallset import encode

BASE = REPO / "manifests" / "base"


def roles() -> list[dict]:
    docs = yaml.safe_load_all((BASE / "operator-rbac.yaml").read_text())
    return [d for d in docs if d and d["kind"] in ("ClusterRole", "Role")]


def role_rules() -> list[dict]:
    return [rule for role in roles() for rule in role["rules"]]


def test_role_never_writes_what_users_own() -> None:
    for rule in role_rules():
        for resource in rule["resources"]:
            if resource in ("tracingpolicies", "containertraces", "pods", "namespaces", "nodes"):
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            if resource.endswith("/status"):
                assert rule["verbs"] == ["patch"], rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule


def test_the_lease_is_granted_in_the_operators_namespace_only() -> None:
    leases = [r for r in roles() if any("leases" in rule["resources"] for rule in r["rules"])]
    assert [(r["kind"], r["metadata"]["namespace"]) for r in leases] == [
        ("Role", "podtrace-system")
    ]
    verbs = {verb for rule in leases[0]["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "create", "update"}
    for rule in leases[0]["rules"]:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == ["podtrace-operator"], rule


@pytest.fixture(scope="module")
def operator_kubeconfig(apiserver: LocalAPIServer, crds_installed: list[str]) -> Path:
    return operator_role_kubeconfig(apiserver)


def test_operator_works_under_its_role(
    apiserver: LocalAPIServer, operator_kubeconfig: Path
) -> None:
    api = apiserver
    whoami = json.loads(api.kubectl("auth", "whoami", "-o", "json",
                                    kubeconfig=operator_kubeconfig).stdout)  # fmt: skip
    assert whoami["status"]["userInfo"]["username"] == (
        "system:serviceaccount:podtrace-system:podtrace-operator"
    )
    apply(api, node("rb-n1"))
    namespace(api, "rb")
    p = pod(api, "p", "rb", "rb-n1", {"app": "rb"})
    with running(api, "--pending-timeout=1h", kubeconfig=operator_kubeconfig,
                 name="rbac") as op:  # fmt: skip
        wait_for("the Lease to let it work", lambda: op.probe().get("active"), 60)
        lease = json.loads(api.kubectl("get", "lease", "podtrace-operator", "-n",
                                       "podtrace-system", "-o", "json").stdout)  # fmt: skip
        assert lease["spec"]["holderIdentity"].startswith("podtrace-system/")
        apply(api,
              policy("rb", {"selector": {"podSelector": {"matchLabels": {"app": "rb"}}}}),
              policy("rb-bad", {"rules": [{"name": "x", "reason": "X", "syscalls": ["nope"]}]}),
              trace("rb", "rb", {"selector": {"matchLabels": {"app": "rb"}},
                                 "seccompProfile": {}}))  # fmt: skip
        wait_targets(api, "rb-n1", "TracingPolicy/rb", [("p", "rb", "app")])
        wait_targets(api, "rb-n1", "ContainerTrace/rb/rb", [("p", "rb", "app")])
        report_as_agent(api, "rb-n1", [{
            "podUid": p["metadata"]["uid"], "container": "app", "state": "Tracing",
        }], {"ContainerTrace/rb/rb": {
            "since": "2026-01-01T00:00:00Z", "syscalls": [{"name": "read", "count": 1}],
            "syscallsTotal": 1, "syscallSet": encode([number_of("read")]),
        }}, [{"podUid": p["metadata"]["uid"], "container": "app", "startSeen": True,
               "syscallSet": encode([number_of("read")])}])  # fmt: skip
        wait_for("the seccomp ConfigMap", lambda: get(api, "configmap", "rb-seccomp", "rb"))
        wait_for("Events", lambda: ("Warning", "Invalid") in reasons(
            events_about(api, "TracingPolicy", "rb-bad")))  # fmt: skip
        wait_for("status", lambda: ((get(api, "tracingpolicy", "rb") or {}).get("status") or {})
                 .get("nodes") == "1/1")  # fmt: skip
        api.kubectl("delete", "node", "rb-n1")
        wait_for("the NodeTracer to go", lambda: nodetracer(api, "rb-n1") is None)
        log = op.text()
    # The apiserver's denials read "... is forbidden: User ... cannot ..."; kopf logs them too.
    denied = [line for line in log.splitlines() if "forbidden" in line.lower()]
    assert not denied, "\n".join(denied[:20])


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "leases/podtrace-operator", "podtrace-system", "yes"),
        ("update", "leases/podtrace-operator", "podtrace-system", "yes"),
        ("create", "leases", "podtrace-system", "yes"),
        ("update", "leases/kube-scheduler", "podtrace-system", "no"),
        ("delete", "leases/podtrace-operator", "podtrace-system", "no"),
        ("list", "leases", "podtrace-system", "no"),
        ("get", "leases/podtrace-operator", "kube-system", "no"),
        ("create", "leases", "kube-system", "no"),
        ("update", "leases/podtrace-operator", "default", "no"),
    ],
)
def test_lease_permissions(
    apiserver: LocalAPIServer, operator_kubeconfig: Path,
    verb: str, resource: str, namespace: str, allowed: str,
) -> None:  # fmt: skip
    answer = apiserver.kubectl("auth", "can-i", verb, resource, "-n", namespace,
                               kubeconfig=operator_kubeconfig, check=False)  # fmt: skip
    assert answer.stdout.strip() == allowed, f"{verb} {resource} -n {namespace}"
