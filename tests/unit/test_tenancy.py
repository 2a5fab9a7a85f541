"""A ContainerTrace reaches the pods of its own namespace and no others, whatever its
spec: the CRD has no field that could name another namespace (or a node), the parse
pins the trace to its namespace, and the compile step (from scratch and incremental)
never gives a trace a target elsewhere. tests/cluster/test_tenants.py checks the same
through the apiserver with a tenant's own token."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from test_selectors import selectors

from podtrace_operator.compiler import ClusterIndex, compile_cluster
from podtrace_operator.inventory import PodRecord
from podtrace_operator.selectors import MATCH_ALL
from podtrace_operator.sources import Source, parse_policy, parse_trace

CRD = Path(__file__).resolve().parents[2] / "crds" / "podtrace.io_containertraces.yaml"
NAMESPACES = ["shop", "bank", "dev"]
NODES = {"n1": {"zone": "a"}, "n2": {"zone": "b"}}


def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def walk(schema: dict[str, Any], path: str = "spec") -> list[tuple[str, dict[str, Any]]]:
    """Every (path, sub-schema) below `schema`."""
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += walk(schema["additionalProperties"], f"{path}{{}}")
    return out


def test_no_field_of_a_trace_spec_names_a_namespace_or_a_node() -> None:
    paths = [p for p, _ in walk(spec_schema())]
    assert "spec.selector.matchLabels" in paths  # the walk sees the fields
    reaching = [p for p in paths if "namespace" in p.lower() or "node" in p.lower()]
    assert reaching == [], reaching
    open_ended = [
        p for p, s in walk(spec_schema()) if s.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert open_ended == [], f"unknown fields would be kept at {open_ended}"


SNEAKY = st.sampled_from(["namespace", "namespaceSelector", "nodeSelector", "namespaces"])


@given(
    st.sampled_from(NAMESPACES), selectors(), st.none() | SNEAKY, st.none() | st.text(max_size=8)
)
def test_a_parsed_trace_is_pinned_to_its_namespace(
    ns: str, selector: dict, extra_key: str | None, extra_value: str | None
) -> None:
    spec: dict[str, Any] = {"selector": selector}
    if extra_key is not None:
        spec[extra_key] = extra_value or {"matchLabels": {}}
    parsed = parse_trace({"metadata": {"name": "t", "namespace": ns}, "spec": spec})
    if extra_key is not None:  # the apiserver prunes it; a body that still has it is refused
        assert parsed.source is None and parsed.problems
        return
    source = parsed.source
    assert source is not None and source.namespace == ns
    assert source.namespace_selector is MATCH_ALL and source.node_selector is MATCH_ALL


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[PodRecord], list[Source]]:
    labels = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]),
                             max_size=2)  # fmt: skip
    pods = [
        PodRecord(
            uid=f"u{i}",
            name=f"p{i}",
            namespace=draw(st.sampled_from(NAMESPACES)),
            node=draw(st.sampled_from(sorted(NODES))),
            labels=draw(labels),
            containers=("app",),
        )
        for i in range(draw(st.integers(0, 12)))
    ]
    sources: list[Source] = []
    for i in range(draw(st.integers(1, 4))):
        body = {"metadata": {"name": f"t{i}", "namespace": draw(st.sampled_from(NAMESPACES))},
                "spec": {"selector": draw(selectors())}}  # fmt: skip
        parsed = parse_trace(body)
        assert parsed.source is not None
        sources.append(parsed.source)
    if draw(st.booleans()):  # a cluster-wide policy alongside changes nothing for traces
        policy = parse_policy({"metadata": {"name": "all"}, "spec": {}}).source
        assert policy is not None
        sources.append(policy)
    return pods, sources


def trace_targets(specs: dict[str, Any], sources: list[Source]) -> list[tuple[str, str]]:
    """(trace namespace, target namespace) of every target a trace has."""
    ns_of = {s.id: s.namespace for s in sources if s.namespace is not None}
    return [(ns_of[sid], t["namespace"]) for spec in specs.values() if spec
            for t in spec["targets"] for sid in t["sources"] if sid in ns_of]  # fmt: skip


@given(worlds(), st.randoms(use_true_random=False))
def test_no_compile_gives_a_trace_a_target_in_another_namespace(
    world: tuple[list[PodRecord], list[Source]], rnd: random.Random
) -> None:
    pods, sources = world
    namespaces = {ns: {"team": ns} for ns in NAMESPACES}
    specs = compile_cluster(pods, namespaces, NODES, sources)
    pairs = trace_targets(specs, sources)
    assert all(mine == theirs for mine, theirs in pairs), pairs
    # Every pod a trace's selector matches in its own namespace is a target.
    for s in sources:
        if s.namespace is None:
            continue
        expected = sorted(p.uid for p in pods if p.namespace == s.namespace
                          and s.pod_selector.matches(p.labels))  # fmt: skip
        got = sorted(t["podUid"] for spec in specs.values() for t in spec["targets"]
                     if s.id in t["sources"])  # fmt: skip
        assert got == expected
    # The incremental index, fed in any order, agrees.
    index = ClusterIndex()
    steps: list[Any] = [*(("ns", n) for n in NAMESPACES), *(("node", n) for n in NODES),
                        *(("pod", p) for p in pods), *(("src", s) for s in sources)]  # fmt: skip
    rnd.shuffle(steps)
    for kind, item in steps:
        if kind == "ns":
            index.upsert_namespace(item, namespaces[item])
        elif kind == "node":
            index.upsert_node(item, NODES[item])
        elif kind == "pod":
            index.upsert_pod(item)
        else:
            index.upsert_source(item)
    index.flush()
    assert index.specs == specs


def test_the_tracer_role_is_aggregated_into_admin_and_edit_only() -> None:
    """Who may exec into a namespace's pods (admin, edit) may trace them; view may not."""
    role_file = CRD.parents[1] / "manifests" / "base" / "tracer-role.yaml"
    role = yaml.safe_load(role_file.read_text())
    prefix = "rbac.authorization.k8s.io/aggregate-to-"
    labels = role["metadata"]["labels"]
    aggregated = {k.removeprefix(prefix) for k, v in labels.items()
                  if k.startswith(prefix) and v == "true"}  # fmt: skip
    assert aggregated == {"admin", "edit"}
    assert (role["kind"], role["metadata"]["name"]) == ("ClusterRole", "podtrace-tracer")
