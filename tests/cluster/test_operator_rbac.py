"""The operator under the ClusterRole of manifests/base, authenticated with a
ServiceAccount token from the TokenRequest API: every path it takes (watching,
peering, NodeTracer create/patch/delete, status, ConfigMaps, Events) works, and
the role grants nothing on users' objects beyond reading them and their status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from operator_helpers import (
    PEERING_MANIFEST,
    REPO,
    apply,
    events_about,
    get,
    namespace,
    node,
    nodetracer,
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

BASE = REPO / "manifests" / "base"


def role_rules() -> list[dict]:
    docs = yaml.safe_load_all((BASE / "operator-rbac.yaml").read_text())
    (role,) = [d for d in docs if d and d["kind"] == "ClusterRole"]
    return role["rules"]


def test_role_never_writes_what_users_own() -> None:
    for rule in role_rules():
        for resource in rule["resources"]:
            if resource in ("tracingpolicies", "containertraces", "pods", "namespaces", "nodes"):
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            if resource.endswith("/status"):
                assert rule["verbs"] == ["patch"], rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule


@pytest.fixture(scope="module")
def operator_kubeconfig(apiserver: LocalAPIServer, crds_installed: list[str]) -> Path:
    for manifest in ("namespace.yaml", "operator-rbac.yaml"):
        apiserver.kubectl("apply", "-f", str(BASE / manifest))
    apiserver.kubectl("apply", "-f", str(PEERING_MANIFEST))
    apiserver.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      "crd/clusterkopfpeerings.kopf.dev")  # fmt: skip
    token = apiserver.make_token("podtrace-system", "podtrace-operator", duration="2h")
    return apiserver.token_kubeconfig(token, "podtrace-operator")


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
        wait_for("peering to let it work", lambda: op.probe().get("active"), 60)
        apply(api,
              policy("rb", {"selector": {"podSelector": {"matchLabels": {"app": "rb"}}}}),
              policy("rb-bad", {"rules": [{"name": "x", "reason": "X", "syscalls": ["nope"]}]}),
              trace("rb", "rb", {"selector": {"matchLabels": {"app": "rb"}},
                                 "seccompProfile": {}}))  # fmt: skip
        wait_targets(api, "rb-n1", "TracingPolicy/rb", [("p", "rb", "app")])
        wait_targets(api, "rb-n1", "ContainerTrace/rb/rb", [("p", "rb", "app")])
        report_as_agent(api, "rb-n1", [{
            "podUid": p["metadata"]["uid"], "container": "app", "state": "Tracing",
            "results": [{"source": "ContainerTrace/rb/rb", "syscalls": {"read": 1}}],
        }])  # fmt: skip
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
