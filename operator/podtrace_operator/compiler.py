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
from dataclasses import dataclass, field
from typing import Any

from podtrace_api.budget import MAX_NODE_SOURCES, MAX_NODE_TARGETS, SPEC_BUDGET_BYTES
from podtrace_api.nodetracer import NodeTracerSpec

from .inventory import PodRecord
from .sources import Source

Labels = Mapping[str, str]
WireSpec = dict[str, Any]

# NodeTracerSpec bounds (maxItems in the CRD): beyond them the apiserver rejects the spec.
# They are the scale a NodeTracer's status is sized for (podtrace_api.budget).
MAX_SOURCES = MAX_NODE_SOURCES
MAX_TARGETS = MAX_NODE_TARGETS
MAX_SOURCES_PER_TARGET = MAX_NODE_SOURCES
MAX_SPEC_BYTES = SPEC_BUDGET_BYTES  # the spec as JSON: beyond it etcd refuses the object


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
    """What had to be left out of a node's spec to stay within the CRD bounds and the
    byte budget: the status of each source it names says so (applied.py)."""

    targets: int = 0
    sources: int = 0
    left_out: Mapping[str, int] = field(default_factory=dict)  # source id → its targets cut
    too_large: bool = False  # sources were cut for the spec's bytes (not only its counts)

    def __bool__(self) -> bool:
        return bool(self.targets or self.sources or self.left_out)


@dataclass(frozen=True)
class NodeSpec:
    """One node's compiled spec, with what had to be cut and the targets per source."""

    wire: WireSpec
    overflow: Overflow
    counts: Mapping[str, int]  # source id → targets on this node


@dataclass(frozen=True)
class PodTargets:
    """The targets one pod contributes, and how many of them each source has."""

    targets: list[dict[str, Any]]
    counts: dict[str, int]


def pod_targets(pod: PodRecord, ids: Iterable[str], sources: Mapping[str, Source]) -> PodTargets:
    """A pod's targets: each container with the sorted ids of the sources that take it."""
    # Most sources take every container: sort once per pod, not per container.
    everywhere = sorted(i for i in ids if not sources[i].containers)
    named = [i for i in ids if sources[i].containers]
    counts = dict.fromkeys(everywhere, len(pod.containers))
    targets = []
    for container in pod.containers:
        wanted = everywhere
        if named:
            extra = [i for i in named if container in sources[i].containers]
            if extra:
                wanted = sorted(everywhere + extra)
                for i in extra:
                    counts[i] = counts.get(i, 0) + 1
        if wanted:
            targets.append({
                "podUid": pod.uid, "container": container,
                "namespace": pod.namespace, "pod": pod.name,
                "sources": wanted[:MAX_SOURCES_PER_TARGET],
            })  # fmt: skip
    return PodTargets(targets, counts)


def build_spec(
    selected: Iterable[tuple[PodRecord, Iterable[str]]],
    sources: Mapping[str, Source],
) -> NodeSpec:
    """One node's spec from its pods and the ids of the sources selecting each.

    Deterministic whatever the input order: targets sorted by (pod UID,
    container), sources by id, each target's source ids sorted.
    """
    return assemble((pod_targets(pod, ids, sources) for pod, ids in selected), sources)


def assemble(parts: Iterable[PodTargets], sources: Mapping[str, Source]) -> NodeSpec:
    """One node's spec from its pods' targets: sorted, and cut to the CRD bounds."""
    targets: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for part in parts:
        targets += part.targets
        for i, n in part.counts.items():
            counts[i] = counts.get(i, 0) + n
    targets.sort(key=lambda t: (t["podUid"], t["container"]))
    asked = dict(counts)
    over_targets = max(0, len(targets) - MAX_TARGETS)
    over_sources = max(0, len(counts) - MAX_SOURCES)
    if over_targets or over_sources or any(
            len(t["sources"]) == MAX_SOURCES_PER_TARGET for t in targets):
        targets, counts = _cut(targets)
    dropped = _over_budget(targets, counts, sources)
    if dropped:
        targets, counts = _without(targets, dropped)
    left_out = {i: n - counts.get(i, 0) for i, n in asked.items() if n > counts.get(i, 0)}
    overflow = Overflow(over_targets, over_sources, left_out, bool(dropped))
    spec = {"sources": [sources[i].wire for i in sorted(counts)], "targets": targets}
    return NodeSpec(spec, overflow, counts)


def target_bytes(target: Mapping[str, Any]) -> int:
    """The size of one spec target as JSON (no spaces). Its strings are names and source
    ids, which JSON writes as themselves.

    >>> import json
    >>> t = {"podUid": "u1", "container": "c", "namespace": "n", "pod": "p",
    ...      "sources": ["TracingPolicy/a", "TracingPolicy/b"]}
    >>> target_bytes(t) == len(json.dumps(t, separators=(",", ":")))
    True
    """
    ids = target["sources"]
    return (len('{"podUid":"","container":"","namespace":"","pod":"","sources":[]}')
            + len(target["podUid"]) + len(target["container"]) + len(target["namespace"])
            + len(target["pod"]) + sum(len(i) + 3 for i in ids) - (1 if ids else 0))


def _over_budget(targets: list[dict[str, Any]], counts: Mapping[str, int],
                 sources: Mapping[str, Source]) -> set[str]:  # fmt: skip
    """The sources to leave out so that the spec fits MAX_SPEC_BYTES: the largest first
    (one huge policy must not take the node from every other), none when it fits."""
    size = len('{"sources":[],"targets":[]}') + sum(sources[i].wire_bytes + 1 for i in counts)
    size += sum(target_bytes(t) + 1 for t in targets) - bool(counts) - bool(targets)  # commas
    dropped: set[str] = set()
    by_size = sorted(counts, key=lambda i: (-sources[i].wire_bytes, i))
    for sid in by_size:
        if size <= MAX_SPEC_BYTES:
            break
        dropped.add(sid)
        size -= sources[sid].wire_bytes + 1
        size -= sum(len(sid) + 3 for t in targets if sid in t["sources"])  # ids in targets
    return dropped


def _without(targets: list[dict[str, Any]], dropped: set[str]
             ) -> tuple[list[dict[str, Any]], dict[str, int]]:  # fmt: skip
    """The targets with the `dropped` source ids taken out (a target left with none goes)."""
    kept: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for t in targets:
        ids = [i for i in t["sources"] if i not in dropped]
        if ids:
            kept.append({**t, "sources": ids} if len(ids) < len(t["sources"]) else t)
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
    return kept, counts


def _cut(targets: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Keep the first MAX_TARGETS targets and MAX_SOURCES source ids (in sort order)."""
    targets = targets[:MAX_TARGETS]
    kept = set(sorted({i for t in targets for i in t["sources"]})[:MAX_SOURCES])
    cut = []
    counts: dict[str, int] = {}
    for t in targets:
        ids = [i for i in t["sources"] if i in kept]
        if ids:
            cut.append({**t, "sources": ids})
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
    return cut, counts


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
    return {node: build_spec(selected, by_id).wire for node, selected in sorted(per_node.items())}


def typed(spec: WireSpec) -> NodeTracerSpec:
    """The wire spec as the API model (validates it against the contract)."""
    return NodeTracerSpec.model_validate(spec)


class ClusterIndex:
    """Incremental compile state. Mutate with the upsert/delete methods, then
    `flush()` to recompute only the nodes those changes touched.

    Matching a pod is three set lookups and two intersections: the sources whose
    pod selector accepts its label set (replicas share label sets), whose namespace
    constraint accepts its namespace, and whose node selector accepts its node.
    The three caches are filled lazily and dropped when their inputs change.
    """

    # Dropped wholesale beyond this many label sets (pods come and go with new hashes).
    MAX_LABEL_SETS = 50_000

    def __init__(self) -> None:
        self.pods: dict[str, PodRecord] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, dict[str, str]] = {}
        self.sources: dict[str, Source] = {}
        self.specs: dict[str, WireSpec] = {}
        self.overflow: dict[str, Overflow] = {}
        self._on_node: defaultdict[str, set[str]] = defaultdict(set)  # tracked pod UIDs
        self._in_ns: defaultdict[str, set[str]] = defaultdict(set)  # tracked pod UIDs
        self._matches: dict[str, frozenset[str]] = {}  # pod UID → selecting source ids
        self._dirty: set[str] = set()
        self._by_labels: dict[frozenset[tuple[str, str]], frozenset[str]] = {}
        self._by_ns: dict[str, frozenset[str]] = {}
        self._by_node: dict[str, frozenset[str]] = {}
        self._counts: dict[str, Mapping[str, int]] = {}  # node → source id → targets
        # pod UID → (footprint, targets) as last built, for selected pods only; dropped
        # when a source selecting the pod changes.
        self._pod_targets: dict[str, tuple[tuple[Any, ...], PodTargets]] = {}
        # source id → node → targets there; what status reports need.
        self._placement: defaultdict[str, dict[str, int]] = defaultdict(dict)

    # -- inputs --

    def upsert_pod(self, pod: PodRecord) -> None:
        old = self.pods.get(pod.uid)
        if old == pod:
            self.pods[pod.uid] = pod  # nothing to recompile; keep what is shown (images)
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
        self._by_ns.pop(name, None)
        self._rematch_all(self._in_ns.get(name, ()))

    def delete_namespace(self, name: str) -> None:
        if self.namespaces.pop(name, None) is not None:
            self._by_ns.pop(name, None)
            self._rematch_all(self._in_ns.get(name, ()))

    def upsert_node(self, name: str, labels: Labels) -> None:
        if self.nodes.get(name) == labels:
            return
        self.nodes[name] = dict(labels)
        self._by_node.pop(name, None)
        self._dirty.add(name)  # a new node gets a (possibly empty) spec
        self._rematch_all(self._on_node.get(name, ()))

    def delete_node(self, name: str) -> None:
        if self.nodes.pop(name, None) is not None:
            self._by_node.pop(name, None)
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
            if node in self.nodes:
                built = self._compute(node)
                new: WireSpec | None = built.wire
                self.specs[node] = built.wire
                self._count(node, built.counts)
                if built.overflow:
                    self.overflow[node] = built.overflow
                else:
                    self.overflow.pop(node, None)
            else:
                new = None
                self.specs.pop(node, None)
                self.overflow.pop(node, None)
                self._count(node, {})
            if new != old:
                changed[node] = new
        return changed

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def placement(self, source_id: str) -> Mapping[str, int]:
        """Node → number of targets of `source_id` there, as of the last flush."""
        return self._placement.get(source_id, {})

    def left_out(self, source_id: str) -> dict[str, int]:
        """Node → targets of `source_id` left out of that node's spec (its bounds), as of
        the last flush."""
        return {node: n for node, o in sorted(self.overflow.items())
                if (n := o.left_out.get(source_id, 0))}  # fmt: skip

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
        by_node = self._by_node.get(pod.node)
        if by_node is None:
            labels = self.nodes[pod.node]
            by_node = frozenset(
                s.id for s in self.sources.values() if s.active and s.node_selector.matches(labels)
            )
            self._by_node[pod.node] = by_node
        by_ns = self._by_ns.get(pod.namespace)
        if by_ns is None:
            labels = self.namespaces.get(pod.namespace, {})
            by_ns = frozenset(
                s.id
                for s in self.sources.values()
                if s.active
                and s.namespace in (None, pod.namespace)
                and s.namespace_selector.matches(labels)
            )
            self._by_ns[pod.namespace] = by_ns
        key = frozenset(pod.labels.items())
        by_labels = self._by_labels.get(key)
        if by_labels is None:
            if len(self._by_labels) >= self.MAX_LABEL_SETS:
                self._by_labels.clear()
            by_labels = frozenset(
                s.id
                for s in self.sources.values()
                if s.active and s.pod_selector.matches(pod.labels)
            )
            self._by_labels[key] = by_labels
        return by_node & by_ns & by_labels

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
            # Cached targets exist only for selected pods, so that a source change can
            # find (and drop) every entry built from it among the pods it selects.
            self._pod_targets.pop(uid, None)
        after = self._footprint(uid)
        if before != after:
            self._dirty.update(f[0] for f in (before, after) if f is not None)

    def _rematch_all(self, uids: Iterable[str]) -> None:
        for uid in list(uids):
            self._rematch(uid, self._footprint(uid))

    def _resource(self, source_id: str, old: Source | None, new: Source | None) -> None:
        """Re-evaluate one source against the pods it could select, before and after."""
        self._by_labels.clear()
        self._by_ns.clear()
        self._by_node.clear()
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
                self._pod_targets.pop(uid, None)  # the source's containers may have changed

    def _compute(self, node: str) -> NodeSpec:
        parts = []
        for uid in self._on_node.get(node, ()):
            footprint = self._footprint(uid)
            if footprint is None:
                continue
            cached = self._pod_targets.get(uid)
            if cached is None or cached[0] != footprint:
                cached = (footprint, pod_targets(self.pods[uid], self._matches[uid], self.sources))
                self._pod_targets[uid] = cached
            parts.append(cached[1])
        return assemble(parts, self.sources)

    def _count(self, node: str, counts: Mapping[str, int]) -> None:
        """Move the node's per-source target counts into the per-source placement."""
        old = self._counts.pop(node, {})
        if counts:
            self._counts[node] = counts
        for sid in old.keys() | counts.keys():
            n = counts.get(sid, 0)
            if n == old.get(sid, 0):
                continue
            if n:
                self._placement[sid][node] = n
            else:
                where = self._placement.get(sid, {})
                where.pop(node, None)
                if not where:
                    self._placement.pop(sid, None)
