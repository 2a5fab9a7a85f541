"""podtrace installed on two nodes of the local cluster (each its own containerd,
kubelet and cgroup root, as kind's nodes are each under their container's cgroup): one
agent pod per node from the DaemonSet, each tracing its own node; a Deployment whose
replicas the real scheduler spreads over both nodes, traced by one ContainerTrace whose
status merges both nodes' exact counts; a TracingPolicy with a node selector traced on
its node only; counts kept when a pod ends and when a whole node goes away.

The tests share one installation and run in file order.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from harness.install_checks import API, EXECS, NAMESPACE, WORKLOAD, Installation, condition
from harness.localcluster import LocalCluster

NS = "spread"
TRACE, POLICY = "web-rec", "node-one-web"
WEB = {"app": "web"}


def ct_status(inst: Installation) -> dict[str, Any]:
    return (inst.maybe("containertrace", TRACE, NS) or {}).get("status") or {}


def merged_execs(status: dict[str, Any]) -> dict[str, int]:
    return {r["filename"]: r["count"] for r in status.get("execs") or []
            if not r["filename"].startswith("/proc/self/")}  # fmt: skip


def doubled(counts: dict[str, int]) -> dict[str, int]:
    return {k: 2 * v for k, v in counts.items()}


def test_one_agent_per_node_each_tracing_its_own_node(
    installed_on_two_nodes: Installation, two_nodes: LocalCluster
) -> None:
    inst = installed_on_two_nodes
    names = [n.name for n in two_nodes.nodes]

    def agents_ready() -> dict[str, Any] | None:
        ds = inst.maybe("daemonset", "podtrace-agent", NAMESPACE) or {}
        return ds if (ds.get("status") or {}).get("numberReady") == 2 else None

    inst.wait_for("the agent DaemonSet 2/2 ready", agents_ready,
                  show=lambda: inst.maybe("daemonset", "podtrace-agent", NAMESPACE))
    agents = inst.pods("app.kubernetes.io/name=podtrace-agent")
    assert sorted(p["spec"]["nodeName"] for p in agents) == sorted(names), inst.logs()

    def both_ready() -> dict[str, dict[str, Any]] | None:
        nts = {n: (inst.maybe("nodetracer", n) or {}).get("status") or {} for n in names}
        ok = all(condition(s, "Ready").get("status") == "True" for s in nts.values())
        return nts if ok else None

    nts = inst.wait_for("both NodeTracers Ready", both_ready,
                        show=lambda: {n: inst.maybe("nodetracer", n) for n in names})
    for node in two_nodes.nodes:
        status = nts[node.name]
        ctx = f"{node.name}: {json.dumps(status, indent=1)}{inst.logs()}"
        assert status["backend"]["name"] == "bcc", ctx
        # Each agent traces the kubepods of the node it runs on, not the other's.
        assert "/" + status["cgroup"]["kubepodsPath"] == node.kubepods, ctx
    print("\n" + inst.kubectl("get", "nt"))


def test_deployment_across_nodes_merged_exactly(
    installed_on_two_nodes: Installation, two_nodes: LocalCluster
) -> None:
    inst = installed_on_two_nodes
    names = sorted(n.name for n in two_nodes.nodes)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    inst.run("apply", "-f", "-", input=json.dumps(namespace))
    inst.wait_for(f"namespace {NS}'s ServiceAccount",
                  lambda: inst.maybe("serviceaccount", "default", NS))  # fmt: skip
    trace = {"apiVersion": API, "kind": "ContainerTrace",
             "metadata": {"name": TRACE, "namespace": NS},
             "spec": {"selector": {"matchLabels": WEB}, "seccompProfile": {}}}  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(trace))
    inst.wait_for("the trace Valid", lambda: condition(ct_status(inst), "Valid")
                  .get("status") == "True")  # fmt: skip
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": WEB},
            "template": {
                "metadata": {"labels": WEB},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    # One replica per node, placed by the real scheduler.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": WEB},
                    }],
                    "containers": [{
                        "name": "main", "image": inst.workload_image,
                        "imagePullPolicy": "Never",
                        "command": ["/bin/busybox", "sh", "-c", WORKLOAD],
                    }],
                },
            },
        },
    }  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(deployment))

    def traced_on_both() -> dict[str, Any] | None:
        status = ct_status(inst)
        targets = status.get("targets") or []
        nodes = sorted(t["node"] for t in targets if t.get("state") == "Tracing")
        done = nodes == names and merged_execs(status) == doubled(EXECS)
        return status if done else None

    status = inst.wait_for("both replicas' execs merged exactly", traced_on_both,
                           show=lambda: ct_status(inst))  # fmt: skip
    ctx = f"{json.dumps(status, indent=1)}{inst.logs()}"
    pods = inst.json("get", "pods", "-n", NS, "-l", "app=web")["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == names, ctx
    assert status["targetCount"] == 2, ctx
    by_node = Counter(t["node"] for t in status["targets"])
    assert by_node == Counter(names), ctx
    cm = inst.wait_for("the seccomp ConfigMap",
                       lambda: (inst.maybe("configmap", f"{TRACE}-seccomp", NS) or {}).get("data"))
    assert cm, ctx


def test_policy_with_a_node_selector_traces_that_node_only(
    installed_on_two_nodes: Installation, two_nodes: LocalCluster
) -> None:
    inst = installed_on_two_nodes
    first, second = (n.name for n in two_nodes.nodes)
    policy = {
        "apiVersion": API, "kind": "TracingPolicy", "metadata": {"name": POLICY},
        "spec": {
            "selector": {"podSelector": {"matchLabels": WEB},
                         "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": first}}},
            "observe": {"processes": {"exec": True}},
        },
    }  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(policy))
    source = f"TracingPolicy/{POLICY}"

    def sources_of(node: str) -> set[str]:
        spec = (inst.maybe("nodetracer", node) or {}).get("spec") or {}
        return {s for t in spec.get("targets") or [] for s in t.get("sources") or []}

    inst.wait_for(f"{POLICY} in {first}'s NodeTracer spec", lambda: source in sources_of(first))

    def policy_ready() -> dict[str, Any] | None:
        st = (inst.maybe("tracingpolicy", POLICY) or {}).get("status") or {}
        return st if st.get("matchedContainers") == 1 and st.get("nodes") == "1/1" else None

    status = inst.wait_for(f"{POLICY} ready on its one node", policy_ready,
                           show=lambda: inst.maybe("tracingpolicy", POLICY))  # fmt: skip
    assert source not in sources_of(second), (status, inst.logs())


def test_counts_stay_when_a_pod_ends_and_when_a_node_goes(
    installed_on_two_nodes: Installation, two_nodes: LocalCluster
) -> None:
    inst = installed_on_two_nodes
    first, second = (n.name for n in two_nodes.nodes)
    # A pod that ends: the replica on the second node, by deleting it with the
    # Deployment scaled to 1 (so it is not replaced).
    inst.run("patch", "deployment", "web", "-n", NS, "--type=merge", "-p",
             json.dumps({"spec": {"replicas": 1}}))  # fmt: skip
    pods = inst.json("get", "pods", "-n", NS, "-l", "app=web")["items"]
    on_second = [p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == second]
    if on_second:  # the ReplicaSet may have picked it already
        inst.run("delete", "pod", *on_second, "-n", NS, "--wait=true", check=False)

    def one_left() -> dict[str, Any] | None:
        running = [p for p in inst.json("get", "pods", "-n", NS, "-l", "app=web")["items"]
                   if p["metadata"].get("deletionTimestamp") is None]
        status = ct_status(inst)
        ok = len(running) == 1 and merged_execs(status) == doubled(EXECS)
        return status if ok else None

    inst.wait_for("one replica left, the ended one's counts kept", one_left,
                  show=lambda: ct_status(inst))  # fmt: skip

    # A whole node goes: its kubelet and containerd stop, then its Node object is
    # deleted. Its NodeTracer goes with it; the merged counts stay.
    remaining = next(p for p in inst.json("get", "pods", "-n", NS, "-l", "app=web")["items"]
                     if p["metadata"].get("deletionTimestamp") is None)  # fmt: skip
    gone = remaining["spec"]["nodeName"]
    two_nodes.stop_node(gone)
    inst.run("delete", "node", gone, "--wait=true")
    inst.wait_for(f"NodeTracer {gone} deleted", lambda: inst.maybe("nodetracer", gone) is None,
                  timeout=120)  # fmt: skip
    status = ct_status(inst)
    assert merged_execs(status) == doubled(EXECS), (status, inst.logs())
    kept = first if gone == second else second
    nt = (inst.maybe("nodetracer", kept) or {}).get("status") or {}
    assert condition(nt, "Ready").get("status") == "True", (nt, inst.logs())
