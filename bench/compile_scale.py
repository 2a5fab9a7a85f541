"""How the operator's compile step scales (issue 12 part 6): by default 1,000
nodes x 100,000 pods x 1,000 TracingPolicies, fed to the pure compile step
(no apiserver, no watch: the inputs are built in memory).

Prints figures, passes or fails nothing. Run: .venv/bin/python bench/compile_scale.py
[--pods N --policies N --nodes N]

The cluster: 100 nodes, 50 namespaces (half labelled env=prod), pods with three
containers and app/tier labels. The policies mix what users write: a pod label
match, a namespace selector, NotIn/Exists expressions, a node selector, named
containers. Timed: the from-scratch compile, building the incremental index
from nothing, a single pod event, and a single policy edit (medians); memory:
the process's peak RSS (ru_maxrss) and its RSS with the index built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import statistics
import time
from typing import Any

from podtrace_operator.compiler import ClusterIndex, compile_cluster
from podtrace_operator.inventory import PodRecord
from podtrace_operator.sources import parse_policy

APPS = [f"app{i}" for i in range(40)]


def cluster(pods: int, nodes: int, namespaces: int, rnd: random.Random):
    node_labels = {f"node-{i:03d}": {"zone": f"z{i % 4}", "kubernetes.io/arch": "amd64"}
                   for i in range(nodes)}  # fmt: skip
    ns_labels = {f"ns-{i:02d}": {"env": "prod" if i % 2 else "dev"} for i in range(namespaces)}
    records = [
        PodRecord(uid=f"{i:08d}-0000-0000-0000-000000000000", name=f"pod-{i}",
                  namespace=rnd.choice(list(ns_labels)), node=rnd.choice(list(node_labels)),
                  labels={"app": rnd.choice(APPS), "tier": rnd.choice(["fe", "be", "db"])},
                  containers=("app", "sidecar", "init"))
        for i in range(pods)
    ]  # fmt: skip
    return records, ns_labels, node_labels


def policy_spec(i: int, rnd: random.Random) -> dict:
    kind = i % 5
    if kind == 0:
        return {"selector": {"podSelector": {"matchLabels": {"app": rnd.choice(APPS)}}}}
    if kind == 1:
        return {"selector": {"namespaceSelector": {"matchLabels": {"env": "prod"}},
                             "podSelector": {"matchLabels": {"tier": "fe"}}}}  # fmt: skip
    if kind == 2:
        return {"selector": {"podSelector": {"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "app", "operator": "In", "values": rnd.sample(APPS, 3)}]}}}  # fmt: skip
    if kind == 3:
        return {"selector": {"nodeSelector": {"matchLabels": {"zone": "z1"}},
                             "containers": ["app"]}}  # fmt: skip
    return {"selector": {"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "Exists"}, {"key": "canary", "operator": "DoesNotExist"}]}},
        "rules": [{"name": "shell", "reason": "Shell", "execFilenames": ["/bin/sh"]}]}  # fmt: skip


def timed(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(pods_n: int = 100_000, policies: int = 1_000, nodes_n: int = 1_000, repeat: int = 1,
            pod_events: int = 50, policy_edits: int = 3) -> dict[str, Any]:  # fmt: skip
    rnd = random.Random(1)
    pods, namespaces, nodes = cluster(pods_n, nodes_n, 50, rnd)
    sources = []
    for i in range(policies):
        parsed = parse_policy({"metadata": {"name": f"p{i}", "generation": 1},
                               "spec": policy_spec(i, rnd)})  # fmt: skip
        assert parsed.source is not None, parsed.problems
        sources.append(parsed.source)

    specs: dict = {}

    def scratch() -> None:
        specs.update(compile_cluster(pods, namespaces, nodes, sources))

    full = timed(scratch, repeat)
    targets = sum(len(s["targets"]) for s in specs.values())

    index = ClusterIndex()

    def build() -> None:
        for name, labels in nodes.items():
            index.upsert_node(name, labels)
        for name, labels in namespaces.items():
            index.upsert_namespace(name, labels)
        for source in sources:
            index.upsert_source(source)
        for pod in pods:
            index.upsert_pod(pod)
        index.flush()

    built = timed(build)
    assert index.specs == specs, "incremental and from-scratch compiles disagree"

    def pod_event() -> None:
        pod = pods[rnd.randrange(len(pods))]
        index.upsert_pod(dataclasses.replace(pod, labels={"app": rnd.choice(APPS)}))
        index.flush()

    def policy_event() -> None:
        i = rnd.randrange(len(sources))
        parsed = parse_policy({"metadata": {"name": f"p{i}", "generation": rnd.randint(2, 10**6)},
                               "spec": policy_spec(i, rnd)})  # fmt: skip
        assert parsed.source is not None
        index.upsert_source(parsed.source)
        index.flush()

    one_pod = timed(pod_event, pod_events)
    one_policy = timed(policy_event, policy_edits)
    return {"pods": pods_n, "policies": policies, "nodes": nodes_n, "targets": targets,
            "scratch_s": full, "index_build_s": built, "pod_event_ms": one_pod * 1000,
            "policy_edit_ms": one_policy * 1000, "pod_events": pod_events,
            "policy_edits": policy_edits, "rss_mib": rss_mib(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def print_table(r: dict[str, Any]) -> None:
    print(f"operator compile (pure step): {r['pods']:,} pods x {r['policies']:,} policies on "
          f"{r['nodes']:,} nodes -> {r['targets']:,} targets")
    print(f"  compile from scratch: {r['scratch_s']:.1f} s; incremental index built from "
          f"nothing: {r['index_build_s']:.1f} s")
    print(f"  one pod event (median of {r['pod_events']}): {r['pod_event_ms']:.2f} ms; one "
          f"policy edit (median of {r['policy_edits']}): {r['policy_edit_ms']:,.0f} ms")
    print(f"  RSS {r['rss_mib']:,.0f} MiB with the index built, peak {r['peak_rss_mib']:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pod-events", type=int, default=50)
    parser.add_argument("--policy-edits", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.pods, args.policies, args.nodes, args.repeat, args.pod_events,
                     args.policy_edits)
    print(json.dumps(result, indent=1)) if args.json else print_table(result)


if __name__ == "__main__":
    main()
