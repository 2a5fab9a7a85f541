"""Tenants on a real apiserver, with real ServiceAccount tokens (TokenRequest API):

- a namespace owner bound to `podtrace-tracer` (manifests/base/tracer-role.yaml) with
  a RoleBinding in their namespace creates ContainerTraces there and reads their
  results; traces only their namespace's pods whatever the spec says; cannot reach
  another namespace's traces, NodeTracers, TracingPolicies, or their own results'
  status subresource;
- the agent's token writes no spec of any kind;
- every permission of every Role and ClusterRole `kubectl kustomize manifests/`
  renders is in the README's Permissions table, and every row of it is granted.

The operator runs with the admin's credentials here (its own role is
test_operator_rbac.py's subject).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_helpers import (
    REPO,
    Operator,
    apply,
    get,
    namespace,
    node,
    pod,
    policy,
    running,
    targets_of,
    trace,
    wait_for,
    wait_targets,
)

from harness.apiserver import LocalAPIServer

MINE, THEIRS = "tn-a", "tn-b"
NODE = "tn-n1"
CT = "containertraces.podtrace.io"


@dataclass
class Tenants:
    api: LocalAPIServer
    owner: Path  # kubeconfig of tn-a's owner (ServiceAccount tn-a/owner)
    agent: Path  # kubeconfig of the agent (ServiceAccount podtrace-system/podtrace-agent)
    operator: Operator

    def as_owner(self, *args: str, input: str | None = None) -> Any:
        return self.api.kubectl(*args, input=input, kubeconfig=self.owner, check=False)


def objects(*items: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


@pytest.fixture(scope="module")
def tenants(apiserver: LocalAPIServer, crds_installed: list[str]) -> Iterator[Tenants]:
    api = apiserver
    api.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "namespace.yaml"))
    api.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "tracer-role.yaml"))
    api.kubectl("apply", "-f", str(REPO / "manifests" / "agent" / "rbac.yaml"))
    apply(api, node(NODE))
    for ns in (MINE, THEIRS):
        namespace(api, ns)
    api.ensure_service_account(MINE, "owner")
    # What the README tells a namespace admin to run.
    api.kubectl("create", "rolebinding", "podtrace-tracer", "-n", MINE,
                "--clusterrole=podtrace-tracer", f"--serviceaccount={MINE}:owner")  # fmt: skip
    pod(api, "web", MINE, NODE, {"app": "web"})
    pod(api, "web", THEIRS, NODE, {"app": "web"})
    pod(api, "db", THEIRS, NODE, {"app": "db"})
    owner = api.token_kubeconfig(api.make_token(MINE, "owner"), "tenant-owner")
    agent = api.token_kubeconfig(api.make_token("podtrace-system", "podtrace-agent"), "agent")
    with running(api, "--standalone", "--pending-timeout=1h", name="tenants") as op:
        yield Tenants(api, owner, agent, op)


def forbidden(result: Any) -> bool:
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


def sources_on_node(api: LocalAPIServer) -> dict[str, set[str]]:
    """Source id → the namespaces of its targets on NODE."""
    nt = get(api, "nodetracers.podtrace.io", NODE) or {}
    out: dict[str, set[str]] = {}
    for t in (nt.get("spec") or {}).get("targets") or []:
        for sid in t["sources"]:
            out.setdefault(sid, set()).add(t["namespace"])
    return out


def test_the_owner_traces_their_namespace_and_reads_the_results(tenants: Tenants) -> None:
    api = tenants.api
    made = tenants.as_owner("apply", "-f", "-", input=objects(
        trace("mine", MINE, {"selector": {"matchLabels": {"app": "web"}}})))  # fmt: skip
    assert made.returncode == 0, made.stderr
    wait_targets(api, NODE, f"ContainerTrace/{MINE}/mine", [("web", MINE, "app")])

    def results() -> dict[str, Any] | None:
        out = tenants.as_owner("get", CT, "mine", "-n", MINE, "-o", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout).get("status") or None

    status = wait_for("the trace's status, read by its owner", results)
    assert status["phase"] == "Pending" and status["targets"][0]["pod"] == "web"
    listed = tenants.as_owner("get", CT, "-n", MINE, "-o", "name")
    assert listed.returncode == 0 and "mine" in listed.stdout
    sub = tenants.as_owner("get", f"{CT}/mine", "-n", MINE, "--subresource=status")
    assert sub.returncode == 0, sub.stderr


@pytest.mark.parametrize(
    "spec",
    [
        {"selector": {}},  # everything: everything of this namespace
        {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
        {"selector": {"matchLabels": {"app": "db"}}},  # only tn-b has one: nothing
    ],
    ids=["all", "exists", "only-theirs"],
)
def test_no_selector_reaches_another_namespace(tenants: Tenants, spec: dict[str, Any]) -> None:
    api = tenants.api
    name = f"sel-{len(json.dumps(spec))}"
    made = tenants.as_owner("apply", "-f", "-", input=objects(trace(name, MINE, spec)))
    assert made.returncode == 0, made.stderr
    sid = f"ContainerTrace/{MINE}/{name}"
    expected = [] if spec["selector"].get("matchLabels") else [("web", MINE, "app")]
    wait_targets(api, NODE, sid, expected)
    assert sources_on_node(api).get(sid, {MINE}) == {MINE}


def test_a_spec_that_names_a_namespace_is_refused_or_loses_it(tenants: Tenants) -> None:
    api = tenants.api
    sneaky = trace("sneaky", MINE, {"selector": {}, "namespace": THEIRS,
                                    "namespaceSelector": {}})  # fmt: skip
    strict = tenants.as_owner("apply", "-f", "-", input=objects(sneaky))
    assert strict.returncode != 0 and 'unknown field "namespace"' in strict.stderr
    # Past client-side validation, the apiserver prunes what its schema does not know.
    lax = tenants.as_owner("apply", "--validate=false", "-f", "-", input=objects(sneaky))
    assert lax.returncode == 0, lax.stderr
    stored = get(api, CT, "sneaky", MINE)
    assert stored is not None and stored["spec"]["selector"] == {}
    assert not {"namespace", "namespaceSelector"} & set(stored["spec"]), stored["spec"]
    wait_targets(api, NODE, f"ContainerTrace/{MINE}/sneaky", [("web", MINE, "app")])


@pytest.mark.parametrize(
    "args",
    [
        ("create", "-n", THEIRS, "-f", "-"),  # a trace in another namespace
        ("get", CT, "-n", THEIRS),  # another namespace's results
        ("get", CT, "--all-namespaces"),
        ("get", "nodetracers.podtrace.io"),  # every namespace's targets
        ("get", "nodetracers.podtrace.io", NODE),
        ("get", "tracingpolicies.podtrace.io"),
        ("create", "-f", "-"),  # a TracingPolicy
        ("patch", CT, "mine", "-n", MINE, "--subresource=status", "--type=merge",
         "-p", '{"status": {"phase": "Completed"}}'),  # forge its own results
        ("get", "configmaps", "-n", MINE),  # nothing beyond podtrace's kinds
        ("get", "pods", "-n", THEIRS),
    ],
    ids=["create-theirs", "read-theirs", "read-all", "list-nt", "get-nt", "list-tp",
         "create-tp", "forge-status", "configmaps", "their-pods"],
)  # fmt: skip
def test_the_owner_cannot(tenants: Tenants, args: tuple[str, ...]) -> None:
    body = None
    if args[0] == "create":
        kind = trace("x", THEIRS, {"selector": {}}) if THEIRS in args else policy("x", {})
        body = objects(kind)
    result = tenants.as_owner(*args, input=body)
    assert forbidden(result), (result.returncode, result.stdout, result.stderr)


def test_the_owner_cannot_reach_another_namespace_by_any_api_path(tenants: Tenants) -> None:
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        for resource in ("containertraces.podtrace.io", "containertraces.podtrace.io/status"):
            answer = tenants.as_owner("auth", "can-i", verb, resource, "-n", THEIRS)
            assert answer.stdout.strip() == "no", f"owner may {verb} {resource} in {THEIRS}"
    for verb in ("create", "update", "patch", "delete"):
        for resource in ("tracingpolicies.podtrace.io", "nodetracers.podtrace.io"):
            answer = tenants.as_owner("auth", "can-i", verb, resource)
            assert answer.stdout.strip() == "no", f"owner may {verb} {resource}"


def test_the_agent_writes_no_spec(tenants: Tenants) -> None:
    api = tenants.api
    kinds = ["tracingpolicies.podtrace.io", "containertraces.podtrace.io",
             "nodetracers.podtrace.io"]  # fmt: skip
    for resource in kinds:
        for verb in ("create", "update", "patch", "delete", "deletecollection"):
            answer = api.kubectl("auth", "can-i", verb, resource, "--all-namespaces",
                                 kubeconfig=tenants.agent, check=False)  # fmt: skip
            assert answer.stdout.strip() == "no", f"the agent may {verb} {resource}"
    # And for real: each write of a spec is refused.
    tries: list[tuple[tuple[str, ...], str | None]] = [
        (("apply", "-f", "-"), objects(policy("agent-made", {}))),
        (("apply", "-f", "-"), objects(trace("agent-made", MINE, {"selector": {}}))),
        (("patch", "nodetracers.podtrace.io", NODE, "--type=merge", "-p",
          '{"spec": {"targets": []}}'), None),
        (("delete", "nodetracers.podtrace.io", NODE), None),
        (("patch", CT, "mine", "-n", MINE, "--type=merge", "-p",
          '{"spec": {"selector": {}}}'), None),
    ]  # fmt: skip
    for args, stdin in tries:
        result = api.kubectl(*args, input=stdin, kubeconfig=tenants.agent, check=False)
        assert forbidden(result), (args, result.stderr)
    assert targets_of(api, NODE, f"ContainerTrace/{MINE}/mine")  # untouched


# -- every permission is documented --------------------------------------------------------------

README = REPO / "README.md"
Permission = tuple[str, str, str, str, str]  # role, API group, resource, resource name, verb


def documented() -> set[Permission]:
    """The rows of the README's Permissions table, one tuple per verb and resource."""
    text = README.read_text()
    section = text.split("\n## Permissions\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    out: set[Permission] = set()
    for row in rows:
        if set(row) <= {"|", "-", " "}:
            continue
        role, group, resources, names, verbs, _why = (c.strip() for c in row.strip("|").split("|"))
        role = re.sub(r"`([^`]*)`", r"\1", role)
        group = "" if group == "core" else group.strip("`")
        for resource in resources.replace("`", "").split(", "):
            for name in names.replace("`", "").split(", ") if names else [""]:
                for verb in verbs.split(", "):
                    out.add((role, group, resource, name, verb))
    return out


def granted(api: LocalAPIServer) -> set[Permission]:
    """Every permission of every Role and ClusterRole that manifests/ installs."""
    rendered = api.kubectl("kustomize", str(REPO / "manifests")).stdout
    out: set[Permission] = set()
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] not in ("ClusterRole", "Role"):
            continue
        meta = doc["metadata"]
        role = f"{doc['kind']} " + (f"{meta['namespace']}/" if doc["kind"] == "Role" else "")
        role += meta["name"]
        for rule in doc.get("rules") or []:
            for group in rule.get("apiGroups") or [""]:
                for resource in rule.get("resources") or []:
                    for name in rule.get("resourceNames") or [""]:
                        for verb in rule["verbs"]:
                            out.add((role, group, resource, name, verb))
    return out


def test_every_permission_of_every_podtrace_role_is_documented(apiserver: LocalAPIServer) -> None:
    grants, docs = granted(apiserver), documented()
    assert grants, "kubectl kustomize manifests/ rendered no role"
    assert {p[0] for p in grants} >= {"ClusterRole podtrace-operator", "ClusterRole podtrace-agent",
                                       "ClusterRole podtrace-tracer",
                                       "Role podtrace-system/podtrace-operator-lease"}  # fmt: skip
    undocumented = sorted(grants - docs)
    assert not undocumented, f"granted but not in the README's Permissions: {undocumented}"
    stale = sorted(docs - grants)
    assert not stale, f"in the README's Permissions but granted by no role: {stale}"
    assert not any("*" in p for p in grants)
