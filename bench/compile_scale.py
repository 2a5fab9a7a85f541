"""How the operator's compile step scales: 10,000 pods × 100 TracingPolicies.

Prints figures, passes or fails nothing. Run: .venv/bin/python bench/compile_scale.py

The cluster: 100 nodes, 50 namespaces (half labelled env=prod), pods with three
containers and app/tier labels. The policies mix what users write: a pod label
match, a namespace selector, NotIn/Exists expressions, a node selector, named
containers. Timed: the from-scratch compile, building the incremental index
from nothing, a single pod event, and a single policy edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rnd = random.Random(1)
    pods, namespaces, nodes = cluster(args.pods, args.nodes, 50, rnd)
    sources = []
    for i in range(args.policies):
        parsed = parse_policy({"metadata": {"name": f"p{i}", "generation": 1},
                               "spec": policy_spec(i, rnd)})  # fmt: skip
        assert parsed.source is not None, parsed.problems
        sources.append(parsed.source)

    specs: dict = {}

    def scratch() -> None:
        specs.update(compile_cluster(pods, namespaces, nodes, sources))

    full = timed(scratch, args.repeat)
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

    one_pod = timed(pod_event, 200)
    one_policy = timed(policy_event, 20)
    print(f"cluster: {args.pods} pods x {args.policies} policies on {args.nodes} nodes "
          f"-> {targets} targets")  # fmt: skip
    print(f"compile from scratch (median of {args.repeat}): {full:.2f} s")
    print(f"incremental index built from nothing: {built:.2f} s")
    print(f"one pod event (median of 200): {one_pod * 1000:.2f} ms")
    print(f"one policy edit (median of 20): {one_policy * 1000:.1f} ms")


if __name__ == "__main__":
    main()
