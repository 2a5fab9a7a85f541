"""podtrace installed on two nodes of the local cluster (each its own containerd,
kubelet and cgroup root, as kind's nodes are each under their container's cgroup): one
agent pod per node from the DaemonSet, each tracing its own node; a Deployment whose
replicas the real scheduler spreads over both nodes, traced by one ContainerTrace whose
status merges both nodes' exact counts; a TracingPolicy with a node selector traced on
its node only; an agent that stops (its process stopped with SIGSTOP, as a hung agent:
its pod stays Running, only its missing heartbeats tell) found silent within the
heartbeat timeout, its NodeTracer Ready Unknown and named by the policy and trace with
targets there while the other node keeps tracing new work; counts kept when a pod
ends, and when a whole node stops (silent first, its Node still there) and goes away.

The installation runs with short heartbeats (agents every 2s, operator timeout 10s,
install_overlay.Heartbeats) so that each fault takes seconds. Every test runs twice:
with the nodes in the host's cgroup namespace (`host-cgroupns`), and with each node in
a cgroup namespace of its own rooted at its cgroup root, as a kind node
(`own-cgroupns`, harness/nodens.py).

The tests share one installation and run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.install_checks import (
    API,
    EXECS,
    NAMESPACE,
    RUNTIME_REEXECS,
    WORKLOAD,
    Installation,
    check_profile_installed,
    condition,
    container_id,
)
from harness.install_overlay import Heartbeats
from harness.localcluster import LocalCluster
from podtrace_api.base import parse_duration

NS = "spread"
TRACE, POLICY = "web-rec", "node-one-web"
WEB = {"app": "web"}


def ct_status(inst: Installation) -> dict[str, Any]:
    return (inst.maybe("containertrace", TRACE, NS) or {}).get("status") or {}


def merged_execs(status: dict[str, Any]) -> dict[str, int]:
    return {r["filename"]: r["count"] for r in status.get("execs") or []
            if not r["filename"].startswith(RUNTIME_REEXECS)}  # fmt: skip


def doubled(counts: dict[str, int]) -> dict[str, int]:
    return {k: 2 * v for k, v in counts.items()}


BEATS = Heartbeats()
TIMEOUT_S = parse_duration(BEATS.timeout).total_seconds()
INTERVAL_S = parse_duration(BEATS.interval).total_seconds()
# Found silent no later than: the last heartbeat before the fault (one interval at most)
# + the timeout + the operator's wake-up and write + our 0.5 s polling; generous slack
# for a busy 2-core machine.
SILENT_WITHIN_S = INTERVAL_S + TIMEOUT_S + 10


def nt_status(inst: Installation, node: str) -> dict[str, Any]:
    return (inst.maybe("nodetracer", node) or {}).get("status") or {}


def ready_of(inst: Installation, node: str) -> dict[str, Any]:
    return condition(nt_status(inst, node), "Ready")


def reporting(status: dict[str, Any]) -> dict[str, Any]:
    return condition(status, "Reporting")


def when(cond: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(cond["lastTransitionTime"].replace("Z", "+00:00"))


def wait_silent(inst: Installation, node: str, began: float) -> tuple[dict[str, Any], float]:
    """Wait for the operator's Ready Unknown on `node`'s NodeTracer; it and the seconds
    since `began`."""
    def unknown() -> dict[str, Any] | None:
        ready = ready_of(inst, node)
        return ready if ready.get("status") == "Unknown" else None

    ready = inst.wait_for(f"NodeTracer {node} Ready Unknown", unknown,
                          timeout=SILENT_WITHIN_S + 30,
                          show=lambda: nt_status(inst, node))  # fmt: skip
    return ready, time.monotonic() - began


def check_still_reporting(inst: Installation, node: str) -> float:
    """`node`'s agent keeps writing heartbeats (Ready True, lastHeartbeatTime moving);
    the seconds between the two heartbeats seen."""
    first = nt_status(inst, node)
    assert condition(first, "Ready").get("status") == "True", (first, inst.logs())

    def moved() -> dict[str, Any] | None:
        now = nt_status(inst, node)
        return now if now.get("lastHeartbeatTime", "") > first["lastHeartbeatTime"] else None

    began = time.monotonic()
    later = inst.wait_for(f"a new heartbeat from {node}", moved, timeout=4 * INTERVAL_S + 10,
                          show=lambda: nt_status(inst, node))  # fmt: skip
    assert condition(later, "Ready").get("status") == "True", (later, inst.logs())
    return time.monotonic() - began


def container_pids(cid: str) -> list[int]:
    """The host PIDs of a container's processes (its cgroup path names its ID)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if cid in (proc / "cgroup").read_text():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """SIGSTOP, and SIGCONT on the way out (a process the kubelet killed meanwhile is
    gone, which is fine)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


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
        assert status["runtime"]["name"] == "containerd", ctx  # its node's CRI socket
        # Each agent traces the kubepods of the node it runs on, not the other's; in a
        # node's own cgroup namespace it sees that node's cgroup as its root.
        cgroup = status["cgroup"]
        if node.namespace is not None:
            assert not cgroup["hostNamespace"], ctx
            assert cgroup["namespaceRoot"] == node.cgroup_root, ctx
            assert cgroup["kubepodsPath"] == "kubepods", ctx
        else:
            assert cgroup["hostNamespace"], ctx
            assert "/" + cgroup["kubepodsPath"] == node.kubepods, ctx
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
             "spec": {"selector": {"matchLabels": WEB},
                      "seccompProfile": {"install": True}}}  # fmt: skip
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
                        # The replica on the first node alone also makes kill(2)
                        # (ash's builtins: no exec, the counts stay doubled).
                        "command": ["/bin/busybox", "sh", "-c",
                                    f'[ "$NODE_NAME" = {names[0]} ] && kill -0 1; {WORKLOAD}'],
                        "env": [{"name": "NODE_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
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

    # One profile for the container name, the union of both replicas, with each
    # syscall's coverage: kill(2) by one replica of two, execve by both.
    def profile_of_both() -> dict[str, Any] | None:
        containers = (ct_status(inst).get("seccompProfile") or {}).get("containers") or []
        main = next((c for c in containers if c["container"] == "main"), None)
        return main if main and main["replicas"] == 2 else None

    main = inst.wait_for("the profile of both replicas", profile_of_both,
                         show=lambda: ct_status(inst).get("seccompProfile"))  # fmt: skip
    ctx = f"{json.dumps(main, indent=1)}{inst.logs()}"
    coverage = {s["name"]: s["replicas"] for s in main["syscalls"]}
    assert coverage.get("kill") == 1, ctx
    assert coverage.get("execve") == 2, ctx
    assert set(coverage.values()) <= {1, 2}, ctx
    profile = json.loads(inst.wait_for(
        "main.json with kill", lambda: (inst.maybe("configmap", f"{TRACE}-seccomp", NS)
                                        or {}).get("data", {}).get("main.json")))  # fmt: skip
    allowed = {n for rule in profile["syscalls"] for n in rule["names"]}
    assert {"kill", "execve"} <= allowed, ctx
    assert allowed <= set(coverage), ctx
    print(f"\nprofile of 'main' over 2 replicas on 2 nodes: {len(coverage)} syscalls, "
          f"{sum(v == 1 for v in coverage.values())} made by one replica only "
          f"({', '.join(sorted(k for k, v in coverage.items() if v == 1))})")

    # Each node's agent pod installed it; a pod on the second node runs the replicas'
    # command under it, through that node's kubelet and runtime (no copy by hand).
    status = check_profile_installed(inst, NS, TRACE, names,
                                     [n.seccomp_dir for n in two_nodes.nodes])
    (main,) = (c for c in status["seccompProfile"]["containers"] if c["container"] == "main")
    confined = deployment["spec"]["template"]["spec"]["containers"][0] | {
        "securityContext": {"seccompProfile": {"type": "Localhost",
                                               "localhostProfile": main["localhostProfile"]}}}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "confined", "namespace": NS, "labels": {"app": "confined"}},
           "spec": {"nodeName": names[1], "terminationGracePeriodSeconds": 1,
                    "containers": [confined]}}  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(pod))
    inst.wait_for("the confined pod's work done", lambda: inst.kubectl(
        "logs", "-n", NS, "confined", check=False) == "worked\n",
        show=lambda: inst.maybe("pod", "confined", NS))  # fmt: skip
    inst.run("delete", "pod", "confined", "-n", NS, "--wait=false")


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


def extra_work(inst: Installation, node: str) -> dict[str, Any]:
    """New work on `node` while the other node's agent is silent: a pod placed there and
    a ContainerTrace of it; the trace's status once it shows the pod's exact execs."""
    trace = {"apiVersion": API, "kind": "ContainerTrace",
             "metadata": {"name": "extra-rec", "namespace": NS},
             "spec": {"selector": {"matchLabels": {"app": "extra"}}}}  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(trace))
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "extra", "namespace": NS, "labels": {"app": "extra"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": inst.workload_image,
                            "imagePullPolicy": "Never",
                            "command": ["/bin/busybox", "sh", "-c", WORKLOAD]}],
        },
    }  # fmt: skip
    inst.run("apply", "-f", "-", input=json.dumps(pod))

    def counted() -> dict[str, Any] | None:
        st = (inst.maybe("containertrace", "extra-rec", NS) or {}).get("status") or {}
        return st if merged_execs(st) == EXECS else None

    return inst.wait_for(f"new work on {node} traced exactly", counted,
                         show=lambda: inst.maybe("containertrace", "extra-rec", NS))  # fmt: skip


def test_a_silent_agent_goes_unknown_and_is_named_while_the_other_node_reports(
    installed_on_two_nodes: Installation, two_nodes: LocalCluster
) -> None:
    inst = installed_on_two_nodes
    first, second = (n.name for n in two_nodes.nodes)
    (agent,) = [p for p in inst.pods("app.kubernetes.io/name=podtrace-agent")
                if p["spec"]["nodeName"] == first]  # fmt: skip
    restarts = agent["status"]["containerStatuses"][0]["restartCount"]
    pids = container_pids(container_id(agent))
    assert pids, f"no process of {first}'s agent on this host{inst.logs()}"
    print(f"\n[fault] heartbeat every {INTERVAL_S:.0f}s, timeout {TIMEOUT_S:.0f}s; SIGSTOP "
          f"to {first}'s agent (pids {pids})", flush=True)  # fmt: skip
    began = time.monotonic()
    with stopped(pids):
        unknown, after = wait_silent(inst, first, began)
        print(f"[fault] NodeTracer {first} Ready Unknown {after:.1f}s after SIGSTOP "
              f"({unknown['reason']}: {unknown['message']})", flush=True)  # fmt: skip
        assert unknown["reason"] == "AgentHeartbeatStale", unknown
        # The timeout did it: not before it, and within it plus a heartbeat and slack.
        assert TIMEOUT_S - INTERVAL_S - 1 <= after <= SILENT_WITHIN_S, (after, unknown)
        # Both objects with targets on that node name it; counts are kept as they were.
        policy = (inst.maybe("tracingpolicy", POLICY) or {}).get("status") or {}
        trace = ct_status(inst)
        for what, status in (("TracingPolicy", policy), ("ContainerTrace", trace)):
            named = reporting(status)
            assert named.get("status") == "False" and first in named.get("message", ""), (
                what, status, inst.logs())
            assert second not in named["message"], (what, status)
        assert condition(policy, "Ready").get("reason") == "AgentNotReporting", policy
        assert policy["nodes"] == "0/1", policy
        assert merged_execs(trace) == doubled(EXECS), trace
        # The other node is not affected: its agent keeps writing and tracing new work.
        gap = check_still_reporting(inst, second)
        extra = extra_work(inst, second)
        assert reporting(extra).get("status") == "True", extra
        assert ready_of(inst, first).get("status") == "Unknown", nt_status(inst, first)
        held = time.monotonic() - began
        print(f"[fault] meanwhile {second}: a new heartbeat within {gap:.1f}s, new work "
              f"traced exactly ({sum(EXECS.values())} execs); {first} silent for "
              f"{held:.1f}s", flush=True)  # fmt: skip

    # SIGCONT (or the kubelet's liveness probe restarted it meanwhile): heartbeats return.
    back = time.monotonic()

    def recovered() -> dict[str, Any] | None:
        # Ready again as a new transition: the agent took the operator's Unknown in.
        ready = ready_of(inst, first)
        named = reporting(ct_status(inst))
        again = ready.get("status") == "True" and named.get("status") == "True"
        return ready if again and when(ready) >= when(unknown) else None

    ready = inst.wait_for(f"NodeTracer {first} Ready again", recovered, timeout=120,
                          show=lambda: nt_status(inst, first))  # fmt: skip
    (agent,) = [p for p in inst.pods("app.kubernetes.io/name=podtrace-agent")
                if p["spec"]["nodeName"] == first]  # fmt: skip
    restarted = agent["status"]["containerStatuses"][0]["restartCount"] - restarts
    print(f"[fault] {first} Ready again {time.monotonic() - back:.1f}s after SIGCONT "
          f"(liveness restarts meanwhile: {restarted}); Unknown since "
          f"{unknown['lastTransitionTime']}, True since {ready['lastTransitionTime']}",
          flush=True)  # fmt: skip
    policy = (inst.maybe("tracingpolicy", POLICY) or {}).get("status") or {}
    inst.wait_for(f"{POLICY} Ready on its node again",
                  lambda: condition((inst.maybe("tracingpolicy", POLICY) or {}).get("status")
                                    or {}, "Ready").get("status") == "True",
                  show=lambda: inst.maybe("tracingpolicy", POLICY))  # fmt: skip
    assert merged_execs(ct_status(inst)) == doubled(EXECS), (ct_status(inst), inst.logs())
    inst.run("delete", "pod", "extra", "-n", NS, "--wait=true")
    inst.run("delete", "containertrace", "extra-rec", "-n", NS)
    print("\n" + inst.kubectl("get", "nt"))


def test_counts_stay_when_a_pod_ends_and_when_a_node_goes(
    installed_on_two_nodes: Installation, two_nodes: LocalCluster
) -> None:
    inst = installed_on_two_nodes
    first, second = (n.name for n in two_nodes.nodes)
    # A pod that ends: the replica on the second node, by scaling the Deployment to 1
    # with that pod the cheapest to delete (pod-deletion-cost), so that the ReplicaSet
    # ends it and no other (deleting it by hand races the ReplicaSet's own choice, and
    # a third replica would come).
    for pod in inst.json("get", "pods", "-n", NS, "-l", "app=web")["items"]:
        cost = "-100" if pod["spec"]["nodeName"] == second else "100"
        inst.run("annotate", "pod", pod["metadata"]["name"], "-n", NS, "--overwrite",
                 f"controller.kubernetes.io/pod-deletion-cost={cost}")  # fmt: skip
    inst.run("patch", "deployment", "web", "-n", NS, "--type=merge", "-p",
             json.dumps({"spec": {"replicas": 1}}))  # fmt: skip

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
    kept = first if gone == second else second
    began = time.monotonic()
    two_nodes.stop_node(gone)
    # Its Node object stays: the agent's silence is what shows, on the same timeout.
    ready, after = wait_silent(inst, gone, began)
    print(f"\n[fault] node {gone} stopped (kubelet, containerd, its containers): NodeTracer "
          f"Ready Unknown after {after:.1f}s ({ready['message']})", flush=True)  # fmt: skip
    assert after <= SILENT_WITHIN_S, (after, ready)
    trace = ct_status(inst)
    named = reporting(trace)
    assert named.get("status") == "False" and gone in named["message"], (trace, inst.logs())
    assert kept not in named["message"], trace
    assert merged_execs(trace) == doubled(EXECS), trace
    if gone == first:  # the node-selected policy's only node
        policy = (inst.maybe("tracingpolicy", POLICY) or {}).get("status") or {}
        assert gone in reporting(policy).get("message", ""), policy
    gap = check_still_reporting(inst, kept)
    print(f"[fault] {kept} unaffected: Ready True, a new heartbeat within {gap:.1f}s", flush=True)
    print(inst.kubectl("get", "nt,nodes"))
    inst.run("delete", "node", gone, "--wait=true")
    inst.wait_for(f"NodeTracer {gone} deleted", lambda: inst.maybe("nodetracer", gone) is None,
                  timeout=120)  # fmt: skip
    status = ct_status(inst)
    assert merged_execs(status) == doubled(EXECS), (status, inst.logs())
    nt = (inst.maybe("nodetracer", kept) or {}).get("status") or {}
    assert condition(nt, "Ready").get("status") == "True", (nt, inst.logs())
