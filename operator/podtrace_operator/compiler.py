"""The compile step: policies and traces × pods → one NodeTracer spec per node.

Pure: plain records in, plain specs out, no I/O. Two entry points:

- `compile_cluster(...)` computes every node's spec from scratch;
- `ClusterIndex` keeps the inputs indexed (pods by node and namespace, which
  sources select which pod) so that an event recomputes only the nodes it
  touches: a pod event at most two nodes (it may move), a namespace or node
  label change the pods in it, a policy change the pods it selects before or after.

Both produce the same wire dicts ({"sources": [...], "targets": [...]}, sorted),
so an unchanged input gives a byte-identical spec and the caller writes nothing.
A property test drives `ClusterIndex` with random event sequences and compares
it with `compile_cluster` of the final state.

Matching a pod against a source (all must hold): the source is active; for a
ContainerTrace, the pod is in the trace's namespace; the namespace's labels
match the namespace selector, the node's labels the node selector and the pod's
labels the pod selector. The pod must be scheduled to a known Node and not
finished. Each of the pod's containers (init containers included) the source
names (or all, when it names none) becomes a target listing the source.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podtrace_api.nodetracer import NodeTracerSpec

from .inventory import PodRecord
from .sources import Source

Labels = Mapping[str, str]
WireSpec = dict[str, Any]

# NodeTracerSpec bounds (maxItems in the CRD): beyond them the apiserver rejects the spec.
MAX_SOURCES = 256
MAX_TARGETS = 2048
MAX_SOURCES_PER_TARGET = 64


def pod_matches(source: Source, pod: PodRecord, ns_labels: Labels, node_labels: Labels) -> bool:
    """Whether `source` selects `pod` (before container names are considered)."""
    if not source.active:
        return False
    if source.namespace is not None and pod.namespace != source.namespace:
        return False
    return (
        source.namespace_selector.matches(ns_labels)
        and source.node_selector.matches(node_labels)
        and source.pod_selector.matches(pod.labels)
    )


@dataclass(frozen=True)
class Overflow:
    """What had to be left out of a node's spec to stay within the CRD bounds."""

    targets: int = 0
    sources: int = 0

    def __bool__(self) -> bool:
        return bool(self.targets or self.sources)


def build_spec(
    selected: Iterable[tuple[PodRecord, Iterable[str]]],
    sources: Mapping[str, Source],
) -> tuple[WireSpec, Overflow]:
    """One node's spec from its pods and the ids of the sources selecting each.

    Deterministic whatever the input order: targets sorted by (pod UID,
    container), sources by id, each target's source ids sorted.
    """
    targets: list[dict[str, Any]] = []
    for pod, ids in selected:
        chosen = sorted(ids)
        for container in pod.containers:
            wanted = [i for i in chosen if sources[i].selects_container(container)]
            if wanted:
                targets.append(
                    {
                        "podUid": pod.uid,
                        "container": container,
                        "namespace": pod.namespace,
                        "pod": pod.name,
                        "sources": wanted[:MAX_SOURCES_PER_TARGET],
                    }
                )
    targets.sort(key=lambda t: (t["podUid"], t["container"]))
    dropped_targets = max(0, len(targets) - MAX_TARGETS)
    targets = targets[:MAX_TARGETS]
    used = sorted({i for t in targets for i in t["sources"]})
    dropped_sources = max(0, len(used) - MAX_SOURCES)
    if dropped_sources:
        kept = set(used[:MAX_SOURCES])
        targets = [
            {**t, "sources": [i for i in t["sources"] if i in kept]}
            for t in targets
            if kept.intersection(t["sources"])
        ]
        used = sorted(kept)
    spec = {"sources": [sources[i].wire for i in used], "targets": targets}
    return spec, Overflow(targets=dropped_targets, sources=dropped_sources)


def compile_cluster(
    pods: Iterable[PodRecord],
    namespaces: Mapping[str, Labels],
    nodes: Mapping[str, Labels],
    sources: Iterable[Source],
) -> dict[str, WireSpec]:
    """Every known node's spec, from scratch (nodes without targets get an empty spec)."""
    by_id = {s.id: s for s in sources}
    active = [s for s in by_id.values() if s.active]
    per_node: dict[str, list[tuple[PodRecord, list[str]]]] = {n: [] for n in nodes}
    for pod in pods:
        if not pod.tracked or pod.node not in nodes:
            continue
        ns_labels = namespaces.get(pod.namespace, {})
        ids = [s.id for s in active if pod_matches(s, pod, ns_labels, nodes[pod.node])]
        if ids:
            per_node[pod.node].append((pod, ids))
    return {node: build_spec(selected, by_id)[0] for node, selected in sorted(per_node.items())}


def typed(spec: WireSpec) -> NodeTracerSpec:
    """The wire spec as the API model (validates it against the contract)."""
    return NodeTracerSpec.model_validate(spec)


class ClusterIndex:
    """Incremental compile state. Mutate with the upsert/delete methods, then
    `flush()` to recompute only the nodes those changes touched."""

    def __init__(self) -> None:
        self.pods: dict[str, PodRecord] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, dict[str, str]] = {}
        self.sources: dict[str, Source] = {}
        self._on_node: defaultdict[str, set[str]] = defaultdict(set)  # tracked pod UIDs
        self._in_ns: defaultdict[str, set[str]] = defaultdict(set)  # tracked pod UIDs
        self._matches: dict[str, frozenset[str]] = {}  # pod UID → selecting source ids
        self._dirty: set[str] = set()
        self.specs: dict[str, WireSpec] = {}
        self.overflow: dict[str, Overflow] = {}
        # source id → node → number of targets there; what status reports need.
        self._placement: defaultdict[str, dict[str, int]] = defaultdict(dict)

    # -- inputs --

    def upsert_pod(self, pod: PodRecord) -> None:
        old = self.pods.get(pod.uid)
        if old == pod:
            return
        before = self._footprint(pod.uid)
        if old is not None:
            self._unplace(old)
        self.pods[pod.uid] = pod
        if pod.tracked:
            self._on_node[pod.node].add(pod.uid)
            self._in_ns[pod.namespace].add(pod.uid)
        self._rematch(pod.uid, before)

    def delete_pod(self, uid: str) -> None:
        old = self.pods.get(uid)
        if old is None:
            return
        before = self._footprint(uid)
        self._unplace(old)
        del self.pods[uid]
        self._rematch(uid, before)

    def upsert_namespace(self, name: str, labels: Labels) -> None:
        if self.namespaces.get(name) == labels:
            return
        self.namespaces[name] = dict(labels)
        self._rematch_all(self._in_ns.get(name, ()))

    def delete_namespace(self, name: str) -> None:
        if self.namespaces.pop(name, None) is not None:
            self._rematch_all(self._in_ns.get(name, ()))

    def upsert_node(self, name: str, labels: Labels) -> None:
        if self.nodes.get(name) == labels:
            return
        self.nodes[name] = dict(labels)
        self._dirty.add(name)  # a new node gets a (possibly empty) spec
        self._rematch_all(self._on_node.get(name, ()))

    def delete_node(self, name: str) -> None:
        if self.nodes.pop(name, None) is not None:
            self._dirty.add(name)
            self._rematch_all(self._on_node.get(name, ()))

    def upsert_source(self, source: Source) -> None:
        old = self.sources.get(source.id)
        if old == source:
            return
        self.sources[source.id] = source
        self._resource(source.id, old, source)

    def delete_source(self, source_id: str) -> None:
        old = self.sources.pop(source_id, None)
        if old is not None:
            self._resource(source_id, old, None)

    # -- outputs --

    def flush(self) -> dict[str, WireSpec | None]:
        """Recompute the touched nodes; return those whose spec changed (None: node gone)."""
        changed: dict[str, WireSpec | None] = {}
        dirty, self._dirty = self._dirty, set()
        for node in sorted(dirty):
            old = self.specs.get(node)
            new = self._compute(node) if node in self.nodes else None
            self._record_placement(node, old, new)
            if new is None:
                self.specs.pop(node, None)
                self.overflow.pop(node, None)
            else:
                self.specs[node] = new
            if new != old:
                changed[node] = new
        return changed

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def placement(self, source_id: str) -> Mapping[str, int]:
        """Node → number of targets of `source_id` there, as of the last flush."""
        return self._placement.get(source_id, {})

    def targets_of(self, source_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(node, target) for every target of `source_id`, sorted, as of the last flush."""
        return [
            (node, target)
            for node in sorted(self.placement(source_id))
            for target in self.specs[node]["targets"]
            if source_id in target["sources"]
        ]

    # -- internals --

    def _unplace(self, pod: PodRecord) -> None:
        if pod.tracked:
            self._on_node[pod.node].discard(pod.uid)
            self._in_ns[pod.namespace].discard(pod.uid)

    def _select(self, pod: PodRecord) -> frozenset[str]:
        if not pod.tracked or pod.node not in self.nodes:
            return frozenset()
        ns_labels = self.namespaces.get(pod.namespace, {})
        node_labels = self.nodes[pod.node]
        return frozenset(
            s.id for s in self.sources.values() if pod_matches(s, pod, ns_labels, node_labels)
        )

    def _footprint(self, uid: str) -> tuple[Any, ...] | None:
        """Everything about a pod that shows in its node's spec; None when it shows nothing."""
        matches = self._matches.get(uid)
        if not matches:
            return None
        pod = self.pods[uid]
        return (pod.node, pod.name, pod.namespace, pod.containers, matches)

    def _rematch(self, uid: str, before: tuple[Any, ...] | None) -> None:
        pod = self.pods.get(uid)
        matches = self._select(pod) if pod is not None else frozenset()
        if matches:
            self._matches[uid] = matches
        else:
            self._matches.pop(uid, None)
        after = self._footprint(uid)
        if before != after:
            self._dirty.update(f[0] for f in (before, after) if f is not None)

    def _rematch_all(self, uids: Iterable[str]) -> None:
        for uid in list(uids):
            self._rematch(uid, self._footprint(uid))

    def _resource(self, source_id: str, old: Source | None, new: Source | None) -> None:
        """Re-evaluate one source against the pods it could select, before and after."""
        namespaces = {s.namespace for s in (old, new) if s is not None}
        if None in namespaces:
            candidates: Iterable[str] = [u for uids in self._on_node.values() for u in uids]
        else:
            candidates = [u for ns in namespaces for u in self._in_ns.get(ns, ())]  # type: ignore[arg-type]
        for uid in candidates:
            pod = self.pods[uid]
            was = source_id in self._matches.get(uid, ())
            now = (
                new is not None
                and pod.node in self.nodes
                and pod_matches(new, pod, self.namespaces.get(pod.namespace, {}),
                                self.nodes[pod.node])
            )  # fmt: skip
            if now != was:
                current = self._matches.get(uid, frozenset())
                updated = current | {source_id} if now else current - {source_id}
                if updated:
                    self._matches[uid] = updated
                else:
                    self._matches.pop(uid, None)
            if was or now:
                self._dirty.add(pod.node)

    def _compute(self, node: str) -> WireSpec:
        selected = [
            (self.pods[uid], self._matches[uid])
            for uid in self._on_node.get(node, ())
            if uid in self._matches
        ]
        spec, overflow = build_spec(selected, self.sources)
        if overflow:
            self.overflow[node] = overflow
        else:
            self.overflow.pop(node, None)
        return spec

    def _record_placement(self, node: str, old: WireSpec | None, new: WireSpec | None) -> None:
        for spec, sign in ((old, -1), (new, 1)):
            if spec is None:
                continue
            for target in spec["targets"]:
                for sid in target["sources"]:
                    where = self._placement[sid]
                    where[node] = where.get(node, 0) + sign
                    if where[node] == 0:
                        del where[node]
                        if not where:
                            del self._placement[sid]
