"""The operator on a real kube-apiserver: policies and traces applied with
kubectl become per-node NodeTracer specs; status, Events, and no footprint on
the objects users own. The operator runs as a real `podtrace-operator` process.

Each test uses its own nodes, namespaces and labels, so tests do not see each
other's pods; assertions look only at the test's own sources.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_helpers import (
    Operator,
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
    set_pod_phase,
    targets_of,
    trace,
    wait_for,
    wait_targets,
)

from harness.apiserver import LocalAPIServer
from podtrace_api.syscalls import number_of
from podtrace_api.syscallset import encode


@pytest.fixture(scope="module")
def operator(apiserver: LocalAPIServer, crds_installed: list[str]) -> Iterator[Operator]:
    with running(apiserver, "--standalone", "--pending-timeout=4s") as op:
        yield op


def policy_status_of(api: LocalAPIServer, name: str) -> dict[str, Any]:
    return (get(api, "tracingpolicy", name) or {}).get("status") or {}


def phase_of(api: LocalAPIServer, name: str, ns: str) -> str | None:
    return ((get(api, "containertrace", name, ns) or {}).get("status") or {}).get("phase")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return {}


def test_policy_compiles_to_one_nodetracer_per_node(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("cp-n1", {"zone": "a"}), node("cp-n2", {"zone": "b"}))
    namespace(api, "cp-prod", {"env": "cp-prod"})
    namespace(api, "cp-dev", {"env": "cp-dev"})
    pod(api, "web-1", "cp-prod", "cp-n1", {"app": "cp-web"}, containers=("app", "proxy"),
        init=("setup",))  # fmt: skip
    pod(api, "web-2", "cp-prod", "cp-n2", {"app": "cp-web"})
    pod(api, "web-dev", "cp-dev", "cp-n1", {"app": "cp-web"})  # wrong namespace
    pod(api, "db-1", "cp-prod", "cp-n1", {"app": "cp-db"})  # wrong labels
    pod(api, "pending", "cp-prod", "cp-n2", {"app": "cp-web"}, phase="Pending")
    pod(api, "done", "cp-prod", "cp-n2", {"app": "cp-web"}, phase="Succeeded")  # finished
    apply(api, policy("cp-web", {
        "selector": {"namespaceSelector": {"matchLabels": {"env": "cp-prod"}},
                     "podSelector": {"matchLabels": {"app": "cp-web"}}},
        "rules": [{"name": "shell", "reason": "ShellInContainer", "execFilenames": ["/bin/sh"]}],
    }))  # fmt: skip
    src = "TracingPolicy/cp-web"
    wait_targets(api, "cp-n1", src, [("web-1", "cp-prod", c) for c in ("app", "proxy", "setup")])
    wait_targets(api, "cp-n2", src, [("pending", "cp-prod", "app"), ("web-2", "cp-prod", "app")])

    nt = nodetracer(api, "cp-n1")
    assert nt is not None
    (source,) = [s for s in nt["spec"]["sources"] if s["id"] == src]
    assert source["kind"] == "TracingPolicy" and source["generation"] == 1
    assert source["rules"][0]["reason"] == "ShellInContainer"
    assert nt["spec"]["targets"] == sorted(nt["spec"]["targets"],
                                           key=lambda t: (t["podUid"], t["container"]))  # fmt: skip
    # Owned by the Node (garbage collection where a controller-manager runs), by nothing a
    # user manages.
    assert [o["kind"] for o in nt["metadata"]["ownerReferences"]] == ["Node"]

    def status_settled() -> dict | None:
        tp = get(api, "tracingpolicy", "cp-web")
        status = (tp or {}).get("status") or {}
        return tp if status.get("matchedContainers") == 5 else None

    tp = wait_for("policy status", status_settled)
    assert tp["status"]["nodes"] == "0/2" and tp["status"]["observedGeneration"] == 1
    assert condition(tp, "Valid")["status"] == "True"
    assert condition(tp, "Ready")["reason"] == "WaitingForAgents"
    assert ("Normal", "Accepted") in reasons(events_about(api, "TracingPolicy", "cp-web"))


def test_label_changes_move_targets_and_deleting_the_policy_removes_them(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("lm-n1", {"pool": "blue"}), node("lm-n2", {"pool": "green"}))
    namespace(api, "lm-a", {"team": "lm"})
    namespace(api, "lm-b", {"team": "other"})
    pod(api, "p1", "lm-a", "lm-n1", {"app": "lm", "tier": "fe"})
    pod(api, "p2", "lm-b", "lm-n2", {"app": "lm", "tier": "fe"})
    apply(api, policy("lm", {"selector": {
        "namespaceSelector": {"matchLabels": {"team": "lm"}},
        "podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn",
                                              "values": ["db"]}]},
        "nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Exists"}]},
    }}))  # fmt: skip
    src = "TracingPolicy/lm"
    wait_targets(api, "lm-n1", src, [("p1", "lm-a", "app")])
    wait_targets(api, "lm-n2", src, [])

    api.kubectl("label", "namespace", "lm-b", "team=lm", "--overwrite")  # namespace joins
    wait_targets(api, "lm-n2", src, [("p2", "lm-b", "app")])
    api.kubectl("label", "pod", "p1", "-n", "lm-a", "tier=db", "--overwrite")  # pod leaves
    wait_targets(api, "lm-n1", src, [])
    api.kubectl("label", "node", "lm-n2", "pool-")  # node leaves
    wait_targets(api, "lm-n2", src, [])
    api.kubectl("label", "node", "lm-n2", "pool=red")
    wait_targets(api, "lm-n2", src, [("p2", "lm-b", "app")])
    set_pod_phase(api, "p2", "lm-b", "Failed")  # a finished pod is not traced
    wait_targets(api, "lm-n2", src, [])
    set_pod_phase(api, "p2", "lm-b", "Running")
    wait_targets(api, "lm-n2", src, [("p2", "lm-b", "app")])

    api.kubectl("delete", "tracingpolicy", "lm")
    wait_targets(api, "lm-n2", src, [])
    nt = nodetracer(api, "lm-n2")
    assert nt is not None and src not in [s["id"] for s in nt["spec"]["sources"]]


def test_container_trace_never_targets_another_namespace(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("ct-n1"))
    namespace(api, "ct-a")
    namespace(api, "ct-b")
    pod(api, "shop", "ct-a", "ct-n1", {"app": "ct-shop"}, containers=("app", "sidecar"))
    pod(api, "shop", "ct-b", "ct-n1", {"app": "ct-shop"}, containers=("app", "sidecar"))
    apply(api, trace("rec", "ct-a", {"selector": {"matchLabels": {"app": "ct-shop"}},
                                     "container": "app"}))  # fmt: skip
    src = "ContainerTrace/ct-a/rec"
    wait_targets(api, "ct-n1", src, [("shop", "ct-a", "app")])
    time.sleep(1)  # and it stays so
    assert targets_of(api, "ct-n1", src) == [("shop", "ct-a", "app")]
    nt = nodetracer(api, "ct-n1")
    assert nt is not None
    assert {t["namespace"] for t in nt["spec"]["targets"] if src in t["sources"]} == {"ct-a"}


def test_invalid_policy_is_reported_and_the_others_keep_working(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("iv-n1"))
    namespace(api, "iv")
    pod(api, "p", "iv", "iv-n1", {"app": "iv"})
    bad_policy = policy("iv-bad", {
        "selector": {"podSelector": {"matchLabels": {"app": "iv"}}},
        "observe": {"syscalls": {"mode": "Named", "names": ["openat", "notasyscall"]}},
    })  # fmt: skip
    good = policy("iv-good", {"selector": {"podSelector": {"matchLabels": {"app": "iv"}}}})
    apply(api, bad_policy, good)
    wait_targets(api, "iv-n1", "TracingPolicy/iv-good", [("p", "iv", "app")])

    def invalid() -> dict | None:
        tp = get(api, "tracingpolicy", "iv-bad")
        return tp if condition(tp, "Valid").get("status") == "False" else None

    bad = wait_for("Valid=False on the invalid policy", invalid)
    message = condition(bad, "Valid")["message"]
    assert "spec.observe.syscalls.names" in message and "notasyscall" in message
    assert targets_of(api, "iv-n1", "TracingPolicy/iv-bad") == []
    warnings = wait_for("a Warning Event", lambda: [
        e for e in events_about(api, "TracingPolicy", "iv-bad")
        if (e["type"], e["reason"]) == ("Warning", "Invalid")])  # fmt: skip
    assert "notasyscall" in warnings[0]["note"]
    assert warnings[0]["reportingController"] == "podtrace.io/operator"

    # Fixing the spec makes it valid and compiled, with one Normal Event.
    apply(api, policy("iv-bad", {"selector": {"podSelector": {"matchLabels": {"app": "iv"}}},
                                 "observe": {"syscalls": {"mode": "Named",
                                                          "names": ["openat"]}}}))  # fmt: skip
    wait_targets(api, "iv-n1", "TracingPolicy/iv-bad", [("p", "iv", "app")])
    wait_for("Valid=True", lambda: condition(get(api, "tracingpolicy", "iv-bad"),
                                             "Valid").get("status") == "True")  # fmt: skip

    # Broken the same way again: the same Warning, folded into the first Event's series.
    apply(api, bad_policy)
    wait_targets(api, "iv-n1", "TracingPolicy/iv-bad", [])

    def repeated() -> list | None:
        found = [e for e in events_about(api, "TracingPolicy", "iv-bad")
                 if (e["type"], e["reason"]) == ("Warning", "Invalid")]  # fmt: skip
        return found if found and (found[0].get("series") or {}).get("count") == 2 else None

    (event,) = wait_for("the Warning's series to count 2", repeated)
    assert event["metadata"]["name"] == warnings[0]["metadata"]["name"]


def test_reapplying_is_a_no_op_and_user_objects_carry_no_kopf_bookkeeping(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("ra-n1"))
    namespace(api, "ra")
    p = pod(api, "p", "ra", "ra-n1", {"app": "ra"})
    tp = policy("ra", {"selector": {"podSelector": {"matchLabels": {"app": "ra"}}}})
    ct = trace("ra", "ra", {"selector": {"matchLabels": {"app": "ra"}}, "duration": "1h"})
    apply(api, tp, ct)
    wait_targets(api, "ra-n1", "TracingPolicy/ra", [("p", "ra", "app")])
    wait_targets(api, "ra-n1", "ContainerTrace/ra/ra", [("p", "ra", "app")])
    # An agent traces the pod, so the trace is Tracing (for an hour) and nothing moves.
    report_as_agent(api, "ra-n1", [{"podUid": p["metadata"]["uid"], "container": "app",
                                    "state": "Tracing"}])  # fmt: skip
    wait_for("the trace to be Tracing", lambda: phase_of(api, "ra", "ra") == "Tracing")

    def settled(kind: str, ns: str | None) -> dict:
        """The object once its status stopped changing."""
        last: dict = {}

        def same_twice() -> dict | None:
            nonlocal last
            obj = get(api, kind, "ra", ns) or {}
            rv = obj.get("metadata", {}).get("resourceVersion")
            if obj.get("status") and rv == last.get("metadata", {}).get("resourceVersion"):
                return obj
            last = obj
            return None

        return wait_for(f"{kind} status to settle", same_twice, interval=1.0)

    before = {"tracingpolicy": settled("tracingpolicy", None),
              "containertrace": settled("containertrace", "ra")}  # fmt: skip
    nt_before = nodetracer(api, "ra-n1")
    apply(api, tp, ct)  # the same YAML again, as a GitOps sync would
    time.sleep(2)
    for kind, ns in (("tracingpolicy", None), ("containertrace", "ra")):
        after = get(api, kind, "ra", ns)
        assert after is not None
        assert after["metadata"]["resourceVersion"] == before[kind]["metadata"]["resourceVersion"]
    nt_after = nodetracer(api, "ra-n1")
    assert nt_before and nt_after
    assert nt_after["metadata"]["resourceVersion"] == nt_before["metadata"]["resourceVersion"]

    # Nothing of kopf's (or ours) in metadata or spec of what users own.
    owned = [
        get(api, "tracingpolicy", "ra"), get(api, "containertrace", "ra", "ra"),
        get(api, "pod", "p", "ra"), get(api, "namespace", "ra"), get(api, "node", "ra-n1"),
    ]  # fmt: skip
    for obj in owned:
        assert obj is not None
        meta = obj["metadata"]
        assert not meta.get("finalizers"), meta
        assert not [k for k in (meta.get("annotations") or {}) if "kopf" in k], meta
        assert not [k for k in (meta.get("labels") or {}) if "kopf" in k], meta
        assert "kopf" not in json.dumps(obj.get("status") or {})
        # The operator's field manager owns status at most, never spec or metadata.
        for entry in meta.get("managedFields") or []:
            if entry["manager"] == "podtrace-operator":
                assert entry.get("subresource") == "status", entry


def test_trace_lifecycle_with_agent_reports_and_seccomp_profile(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("lc-n1"))
    namespace(api, "lc")
    p = pod(api, "checkout", "lc", "lc-n1", {"app": "lc"})
    apply(api, trace("rec", "lc", {
        "selector": {"matchLabels": {"app": "lc"}}, "duration": "3s",
        "seccompProfile": {"defaultAction": "SCMP_ACT_ERRNO"},
    }))  # fmt: skip
    src = "ContainerTrace/lc/rec"
    wait_targets(api, "lc-n1", src, [("checkout", "lc", "app")])
    assert (get(api, "containertrace", "rec", "lc") or {})["status"]["phase"] == "Pending"

    # The node's agent applies the spec and reports the container traced, with results.
    counts = {"read": 40, "write": 2, "openat": 7}
    report_as_agent(api, "lc-n1", [{
        "podUid": p["metadata"]["uid"], "container": "app", "state": "Tracing",
        "containerId": "abc123", "cgroupId": 4242, "since": "2026-01-01T00:00:00Z",
    }], {src: {"since": "2026-01-01T00:00:00Z",
               "syscalls": [{"name": n, "count": c} for n, c in counts.items()],
               "syscallsTotal": 49, "syscallSet": encode(number_of(n) for n in counts),
               "execs": [{"filename": "/bin/sh", "count": 1, "container": "app"}],
               "execsTotal": 1}},
        # The workload's syscalls (after runc's set-up): the profile holds these only.
        [{"podUid": p["metadata"]["uid"], "container": "app", "startSeen": True,
          "syscallSet": encode(number_of(n) for n in ("read", "write"))}])  # fmt: skip

    def phase(name: str) -> dict | None:
        ct = get(api, "containertrace", "rec", "lc")
        return ct if (ct or {}).get("status", {}).get("phase") == name else None

    tracing = wait_for("phase Tracing", lambda: phase("Tracing"))
    assert tracing["status"]["startTime"]
    assert tracing["status"]["targets"][0]["containerId"] == "abc123"
    done = wait_for("phase Completed", lambda: phase("Completed"), timeout=20)
    status = done["status"]
    assert status["completionTime"] and status["syscalls"]["total"] == 49
    assert status["syscalls"]["top"][0] == {"name": "read", "count": 40}
    assert status["execsTotal"] == 1 and status["execs"][0]["filename"] == "/bin/sh"
    (app,) = status["seccompProfile"]["containers"]
    assert (app["container"], app["key"], app["replicas"], app["startSeen"]) == \
        ("app", "app.json", 1, 1)
    assert app["syscalls"] == [{"name": "read", "replicas": 1}, {"name": "write", "replicas": 1}]
    cm = get(api, "configmap", "rec-seccomp", "lc")
    assert cm is not None and list(cm["data"]) == ["app.json"]
    profile = json.loads(cm["data"]["app.json"])
    assert profile["syscalls"][0]["names"] == ["read", "write"]
    assert profile["architectures"][0] == "SCMP_ARCH_X86_64"
    # A completed trace stops selecting.
    wait_targets(api, "lc-n1", src, [])
    got = reasons(events_about(api, "ContainerTrace", "rec", "lc"))
    assert {("Normal", "Accepted"), ("Normal", "Tracing"), ("Normal", "Completed")} <= got


def test_trace_without_matching_pods_fails_after_the_pending_timeout(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    namespace(api, "nm")
    apply(api, trace("nobody", "nm", {"selector": {"matchLabels": {"app": "absent"}}}))

    def failed() -> dict | None:
        ct = get(api, "containertrace", "nobody", "nm")
        return ct if (ct or {}).get("status", {}).get("phase") == "Failed" else None

    ct = wait_for("phase Failed", failed, timeout=20)
    assert "no running pod matched" in ct["status"]["message"]
    wait_for("the Warning Event", lambda: ("Warning", "NoMatchingPods") in reasons(
        events_about(api, "ContainerTrace", "nobody", "nm")))  # fmt: skip


def test_policy_status_aggregates_agent_reports(
    apiserver: LocalAPIServer, operator: Operator
) -> None:
    api = apiserver
    apply(api, node("ag-n1"), node("ag-n2"))
    namespace(api, "ag")
    p1 = pod(api, "p1", "ag", "ag-n1", {"app": "ag"})
    p2 = pod(api, "p2", "ag", "ag-n2", {"app": "ag"})
    apply(api, policy("ag", {"selector": {"podSelector": {"matchLabels": {"app": "ag"}}},
                             "rules": [{"name": "shell", "reason": "Shell",
                                        "execFilenames": ["/bin/sh"]}]}))  # fmt: skip
    src = "TracingPolicy/ag"
    wait_targets(api, "ag-n1", src, [("p1", "ag", "app")])
    wait_targets(api, "ag-n2", src, [("p2", "ag", "app")])
    for node_name, p, n in (("ag-n1", p1, 3), ("ag-n2", p2, 4)):
        report_as_agent(api, node_name, [{
            "podUid": p["metadata"]["uid"], "container": "app", "state": "Tracing",
        }], {src: {"since": "2026-01-01T00:00:00Z",
                   "ruleMatches": [{"rule": "shell", "count": n}]}})  # fmt: skip

    def aggregated() -> dict | None:
        tp = get(api, "tracingpolicy", "ag")
        status = (tp or {}).get("status") or {}
        return tp if status.get("nodes") == "2/2" and status.get("eventsTotal") == 7 else None

    tp = wait_for("2/2 nodes ready and 7 rule matches", aggregated)
    assert tp["status"]["ruleCounts"] == [{"rule": "shell", "count": 7}]
    assert condition(tp, "Ready")["reason"] == "Applied"

    # p1 finishes: the policy leaves n1's spec and (once kept a while) its report; its
    # counts stay.
    set_pod_phase(api, "p1", "ag", "Succeeded")
    wait_targets(api, "ag-n1", src, [])
    report_as_agent(api, "ag-n1", [])
    wait_for("1 node with targets", lambda: policy_status_of(api, "ag").get("nodesTotal") == 1)
    time.sleep(1)
    status = policy_status_of(api, "ag")
    assert status["eventsTotal"] == 7 and status["matchedContainers"] == 1
    wait_for("the Applied Event", lambda: ("Normal", "Applied") in reasons(
        events_about(api, "TracingPolicy", "ag")))  # fmt: skip


def test_nodetracer_follows_its_node(apiserver: LocalAPIServer, operator: Operator) -> None:
    api = apiserver
    apply(api, node("nd-n1"))
    wait_for("the NodeTracer", lambda: nodetracer(api, "nd-n1"))
    api.kubectl("delete", "nodetracers.podtrace.io", "nd-n1")  # deleted by hand: recreated
    wait_for("the NodeTracer again", lambda: nodetracer(api, "nd-n1"))
    api.kubectl("delete", "node", "nd-n1")
    wait_for("the NodeTracer to go", lambda: nodetracer(api, "nd-n1") is None)
