"""The compile step: policies and traces × pods → NodeTracer specs, by example,
and the incremental index against a from-scratch compile after random events."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from hypothesis import event as note_event
from hypothesis import given, settings
from hypothesis import strategies as st

from podtrace_api.nodetracer import SourceKind
from podtrace_operator.compiler import (
    MAX_TARGETS,
    ClusterIndex,
    compile_cluster,
    typed,
)
from podtrace_operator.inventory import PodRecord, pod_record
from podtrace_operator.selectors import compile_selector
from podtrace_operator.sources import Source, parse_policy, parse_trace

NODES = {"n1": {"zone": "a"}, "n2": {"zone": "b"}}
NAMESPACES = {"shop": {"env": "prod"}, "dev": {"env": "dev"}}


def pod(uid: str, ns: str = "shop", node: str = "n1", labels: dict | None = None,
        containers: tuple[str, ...] = ("app",), **kw: Any) -> PodRecord:  # fmt: skip
    return PodRecord(uid=uid, name=f"pod-{uid}", namespace=ns, node=node,
                     labels=labels or {"app": "web"}, containers=containers, **kw)  # fmt: skip


def policy(name: str, spec: dict | None = None, generation: int = 1) -> Source:
    parsed = parse_policy({"metadata": {"name": name, "generation": generation},
                           "spec": spec or {}})  # fmt: skip
    assert parsed.source is not None, parsed.problems
    return parsed.source


def trace(name: str, ns: str, spec: dict | None = None, active: bool = True) -> Source:
    body = {"metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": spec or {"selector": {"matchLabels": {"app": "web"}}}}  # fmt: skip
    parsed = parse_trace(body, active=active)
    assert parsed.source is not None, parsed.problems
    return parsed.source


def targets(spec: dict) -> list[tuple[str, str, list[str]]]:
    return [(t["podUid"], t["container"], t["sources"]) for t in spec["targets"]]


def test_policy_selects_by_namespace_pod_and_node_labels() -> None:
    web_prod = policy("web-prod", {"selector": {
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
        "podSelector": {"matchLabels": {"app": "web"}},
        "nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
    }})  # fmt: skip
    pods = [
        pod("u1"),  # selected
        pod("u2", node="n2"),  # wrong zone
        pod("u3", ns="dev"),  # wrong namespace
        pod("u4", labels={"app": "db"}),  # wrong labels
    ]
    specs = compile_cluster(pods, NAMESPACES, NODES, [web_prod])
    assert targets(specs["n1"]) == [("u1", "app", ["TracingPolicy/web-prod"])]
    assert specs["n2"] == {"sources": [], "targets": []}
    assert [s["id"] for s in specs["n1"]["sources"]] == ["TracingPolicy/web-prod"]
    typed(specs["n1"])  # the wire spec fits the API contract


def test_all_containers_include_init_containers_and_named_containers_filter() -> None:
    body = {
        "metadata": {"uid": "u1", "name": "p", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "initContainers": [{"name": "setup"}],
                 "containers": [{"name": "app"}, {"name": "sidecar"}]},
        "status": {"phase": "Running"},
    }  # fmt: skip
    everything = policy("all")
    only_app = policy("app-only", {"selector": {"containers": ["app", "missing"]}})
    specs = compile_cluster([pod_record(body)], NAMESPACES, NODES, [everything, only_app])
    assert targets(specs["n1"]) == [
        ("u1", "app", ["TracingPolicy/all", "TracingPolicy/app-only"]),
        ("u1", "setup", ["TracingPolicy/all"]),
        ("u1", "sidecar", ["TracingPolicy/all"]),
    ]


def test_container_trace_never_leaves_its_namespace() -> None:
    ct = trace("rec", "shop")
    pods = [pod("u1", ns="shop"), pod("u2", ns="dev")]  # same labels in both namespaces
    specs = compile_cluster(pods, NAMESPACES, NODES, [ct])
    assert targets(specs["n1"]) == [("u1", "app", ["ContainerTrace/shop/rec"])]
    source = specs["n1"]["sources"][0]
    assert source["kind"] == "ContainerTrace" and source["namespace"] == "shop"


def test_container_trace_with_container_name_and_inactive_trace() -> None:
    ct = trace("one", "shop", {"selector": {}, "container": "side"})
    done = trace("done", "shop", active=False)
    pods = [pod("u1", containers=("app", "side"))]
    specs = compile_cluster(pods, NAMESPACES, NODES, [ct, done])
    assert targets(specs["n1"]) == [("u1", "side", ["ContainerTrace/shop/one"])]


def test_unscheduled_finished_and_unknown_node_pods_are_not_targets() -> None:
    pods = [
        pod("u1", node=""),
        pod("u2", terminated=True),
        pod("u3", node="gone"),
        pod("u4"),
    ]
    specs = compile_cluster(pods, NAMESPACES, NODES, [policy("all")])
    assert set(specs) == {"n1", "n2"}
    assert targets(specs["n1"]) == [("u4", "app", ["TracingPolicy/all"])]


def test_pod_record_from_a_body() -> None:
    record = pod_record({
        "metadata": {"uid": "u", "name": "p", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Succeeded"},
    })  # fmt: skip
    assert record.terminated and not record.tracked and record.labels == {"a": "b"}
    assert pod_record({"metadata": {"uid": "u"}, "spec": {}}).tracked is False


def test_output_is_deterministic_whatever_the_input_order() -> None:
    pods = [pod(f"u{i}", node=random.choice(["n1", "n2"]), containers=("b", "a"))
            for i in range(30)]  # fmt: skip
    sources = [policy(f"p{i}") for i in range(5)] + [trace("t", "shop")]
    first = compile_cluster(pods, NAMESPACES, NODES, sources)
    for _ in range(5):
        random.shuffle(pods)
        random.shuffle(sources)
        again = compile_cluster(pods, NAMESPACES, dict(reversed(NODES.items())), sources)
        assert json.dumps(again) == json.dumps(first)


def test_overflowing_node_is_cut_to_the_crd_bound() -> None:
    pods = [pod(f"u{i:05d}") for i in range(MAX_TARGETS + 5)]
    index = ClusterIndex()
    for name, labels in NODES.items():
        index.upsert_node(name, labels)
    for ns, labels in NAMESPACES.items():
        index.upsert_namespace(ns, labels)
    index.upsert_source(policy("all"))
    for p in pods:
        index.upsert_pod(p)
    index.flush()
    assert len(index.specs["n1"]["targets"]) == MAX_TARGETS
    assert index.overflow["n1"].targets == 5


def make_index(pods: list[PodRecord], sources: list[Source]) -> ClusterIndex:
    index = ClusterIndex()
    for name, labels in NODES.items():
        index.upsert_node(name, labels)
    for ns, labels in NAMESPACES.items():
        index.upsert_namespace(ns, labels)
    for s in sources:
        index.upsert_source(s)
    for p in pods:
        index.upsert_pod(p)
    index.flush()
    return index


def test_a_pod_event_touches_only_its_nodes() -> None:
    index = make_index([pod("u1"), pod("u2", node="n2")], [policy("all")])
    assert index.flush() == {}
    index.upsert_pod(pod("u1", labels={"app": "web", "unrelated": "x"}))
    assert not index.dirty  # labels changed but the selection did not: nothing to do
    index.upsert_pod(pod("u3"))
    assert set(index.flush()) == {"n1"}
    index.upsert_pod(pod("u3", node="n2"))  # moved (a new incarnation): both nodes
    assert set(index.flush()) == {"n1", "n2"}
    index.delete_pod("u3")
    assert set(index.flush()) == {"n2"}
    assert index.placement("TracingPolicy/all") == {"n1": 1, "n2": 1}


def test_label_and_policy_changes_move_targets() -> None:
    web = policy("web", {"selector": {"namespaceSelector": {"matchLabels": {"env": "prod"}}}})
    index = make_index([pod("u1"), pod("u2", ns="dev", node="n2")], [web])
    assert targets(index.specs["n2"]) == []
    index.upsert_namespace("dev", {"env": "prod"})
    assert set(index.flush()) == {"n2"}
    assert index.placement(web.id) == {"n1": 1, "n2": 1}
    index.delete_source(web.id)
    changed = index.flush()
    assert changed == {"n1": {"sources": [], "targets": []}, "n2": {"sources": [], "targets": []}}
    assert index.placement(web.id) == {}


def test_node_deletion_reports_none_and_targets_of() -> None:
    index = make_index([pod("u1"), pod("u2", node="n2")], [policy("all")])
    assert index.targets_of("TracingPolicy/all") == [
        ("n1", index.specs["n1"]["targets"][0]),
        ("n2", index.specs["n2"]["targets"][0]),
    ]
    index.delete_node("n2")
    assert index.flush() == {"n2": None}
    assert index.placement("TracingPolicy/all") == {"n1": 1}


# --- property: incremental == from scratch -----------------------------------------------
#
# Events come from a seeded random.Random (hypothesis picks and shrinks the seed and the
# length): long sequences over a small world, so that the coincidences that matter (a
# label change under a selector that looks at it, a pod moving between nodes, a policy
# edited without changing what it selects) happen in most runs.

NODE_NAMES = ["n1", "n2", "n3"]
NS_NAMES = ["a", "b", "c"]
KEYS = ["app", "env", "zone"]
VALUES = ["x", "y"]
OPS = ["In", "NotIn", "Exists", "DoesNotExist"]
CONTAINERS = ["c1", "c2", "c3"]


def rand_labels(rnd: random.Random) -> dict[str, str]:
    return {k: rnd.choice(VALUES) for k in rnd.sample(KEYS, rnd.randint(0, 2))}


def rand_selector(rnd: random.Random) -> dict | None:
    if rnd.random() < 0.4:
        return None
    keys = rnd.sample(KEYS, rnd.randint(0, 1))
    selector: dict = {"matchLabels": {k: rnd.choice(VALUES) for k in keys}}
    exprs = []
    for _ in range(rnd.randint(0, 1)):
        op = rnd.choice(OPS)
        expr: dict = {"key": rnd.choice(KEYS), "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = rnd.sample(VALUES, rnd.randint(1, 2))
        exprs.append(expr)
    selector["matchExpressions"] = exprs
    return selector


def rand_source(rnd: random.Random, old: Source | None = None) -> Source:
    if old is not None and rnd.random() < 0.3:  # an edit that keeps what it selects
        return dataclasses.replace(old, generation=old.generation + 1)
    n = rnd.randint(0, 3)
    containers = frozenset(rnd.sample(CONTAINERS, rnd.randint(0, 2)))
    if rnd.random() < 0.5:
        return Source(id=f"TracingPolicy/p{n}", kind=SourceKind.TRACING_POLICY, name=f"p{n}",
                      generation=rnd.randint(1, 3),
                      pod_selector=compile_selector(rand_selector(rnd)),
                      namespace_selector=compile_selector(rand_selector(rnd)),
                      node_selector=compile_selector(rand_selector(rnd)),
                      containers=containers)  # fmt: skip
    ns = rnd.choice(NS_NAMES)
    return Source(id=f"ContainerTrace/{ns}/t{n}", kind=SourceKind.CONTAINER_TRACE,
                  name=f"t{n}", namespace=ns, generation=rnd.randint(1, 3),
                  pod_selector=compile_selector(rand_selector(rnd)),
                  containers=frozenset(list(containers)[:1]),
                  active=rnd.random() < 0.8)  # fmt: skip


def rand_pod(rnd: random.Random, old: PodRecord | None) -> PodRecord:
    if old is not None and rnd.random() < 0.5:  # relabel or finish an existing pod
        return dataclasses.replace(old, labels=rand_labels(rnd), terminated=rnd.random() < 0.2)
    uid = f"u{rnd.randint(0, 9)}"
    return PodRecord(uid=uid, name=f"pod-{uid}", namespace=rnd.choice(NS_NAMES),
                     node=rnd.choice([*NODE_NAMES, *NODE_NAMES, "", "n9"]),
                     labels=rand_labels(rnd),
                     containers=tuple(rnd.sample(CONTAINERS, rnd.randint(1, 3))),
                     terminated=rnd.random() < 0.1)  # fmt: skip


class World:
    """The test's own record of the inputs, and the index fed the same events."""

    def __init__(self) -> None:
        self.index = ClusterIndex()
        self.pods: dict[str, PodRecord] = {}
        self.ns: dict[str, dict] = {}
        self.nodes: dict[str, dict] = {}
        self.sources: dict[str, Source] = {}
        self.seen: dict[str, Any] = {}  # what a consumer applying only flush() changes holds
        self.had_targets = False

    def step(self, rnd: random.Random) -> None:
        r = rnd.random()
        if r < 0.35:
            old = self.pods.get(rnd.choice(list(self.pods))) if self.pods else None
            pod = rand_pod(rnd, old)
            self.pods[pod.uid] = pod
            self.index.upsert_pod(pod)
        elif r < 0.42:
            uid = f"u{rnd.randint(0, 9)}"
            self.pods.pop(uid, None)
            self.index.delete_pod(uid)
        elif r < 0.52:
            name, labels = rnd.choice(NS_NAMES), rand_labels(rnd)
            self.ns[name] = labels
            self.index.upsert_namespace(name, labels)
        elif r < 0.55:
            name = rnd.choice(NS_NAMES)
            self.ns.pop(name, None)
            self.index.delete_namespace(name)
        elif r < 0.65:
            name, labels = rnd.choice(NODE_NAMES), rand_labels(rnd)
            self.nodes[name] = labels
            self.index.upsert_node(name, labels)
        elif r < 0.68:
            name = rnd.choice(NODE_NAMES)
            self.nodes.pop(name, None)
            self.index.delete_node(name)
        elif r < 0.85:
            old = self.sources.get(rnd.choice(list(self.sources))) if self.sources else None
            source = rand_source(rnd, old)
            self.sources[source.id] = source
            self.index.upsert_source(source)
        elif r < 0.88 and self.sources:
            sid = rnd.choice(list(self.sources))
            del self.sources[sid]
            self.index.delete_source(sid)
        else:
            self.flush()

    def flush(self) -> None:
        """Apply the index's changes as a consumer would, and check them against a
        from-scratch compile of the same inputs (after every flush, so that a stale
        match is caught before a later event happens to repair it)."""
        for node, spec in self.index.flush().items():
            if spec is None:
                self.seen.pop(node, None)
            else:
                self.seen[node] = spec
        expected = compile_cluster(self.pods.values(), self.ns, self.nodes,
                                   self.sources.values())  # fmt: skip
        assert self.index.specs == expected
        assert self.seen == expected
        for sid in self.sources:
            placement = {node: sum(sid in t["sources"] for t in spec["targets"])
                         for node, spec in expected.items()}  # fmt: skip
            assert self.index.placement(sid) == {n: c for n, c in placement.items() if c}
        self.had_targets = self.had_targets or any(s["targets"] for s in expected.values())


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=150))
def test_incremental_equals_from_scratch(rnd: random.Random, steps: int) -> None:
    world = World()
    for _ in range(steps):
        world.step(rnd)
    world.flush()
    note_event(f"targets: {world.had_targets}")


def _spec_bytes(spec: dict) -> int:
    return len(json.dumps(spec, separators=(",", ":")))


def test_a_spec_over_its_byte_budget_leaves_the_largest_source_out(monkeypatch: Any) -> None:
    from podtrace_operator import compiler

    big = policy("big", {"rules": [
        {"name": f"r{i}", "reason": "Shell", "message": "m" * 500,
         "execFilenames": [f"/bin/sh{i}"]}
        for i in range(8)]})  # fmt: skip
    small = policy("small")
    pods = [pod(f"u{i}") for i in range(20)]
    fits_both = _spec_bytes(compile_cluster(pods, NAMESPACES, NODES, [big, small])["n1"])
    fits_small = _spec_bytes(compile_cluster(pods, NAMESPACES, NODES, [small])["n1"])
    assert fits_small < fits_both - 4000
    monkeypatch.setattr(compiler, "MAX_SPEC_BYTES", fits_both - 1)
    index = make_index(pods, [big, small])
    spec = index.specs["n1"]
    assert _spec_bytes(spec) <= fits_both - 1
    assert [s["id"] for s in spec["sources"]] == [small.id]
    assert index.left_out(big.id) == {"n1": 20} and index.left_out(small.id) == {}
    assert index.overflow["n1"].too_large
    # what is left is exactly the spec of the small policy alone
    assert spec == compile_cluster(pods, NAMESPACES, NODES, [small])["n1"]
    monkeypatch.setattr(compiler, "MAX_SPEC_BYTES", fits_both)
    assert [s["id"] for s in make_index(pods, [big, small]).specs["n1"]["sources"]] == \
        sorted([big.id, small.id])


@given(st.lists(st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z"), max_size=4))
def test_target_bytes_is_the_json_size(ids: list[str]) -> None:
    from podtrace_operator.compiler import target_bytes

    t = {"podUid": "0c1f-aa", "container": "app", "namespace": "shop", "pod": "web-1",
         "sources": [f"TracingPolicy/{i}" for i in ids]}  # fmt: skip
    assert target_bytes(t) == _spec_bytes(t)
