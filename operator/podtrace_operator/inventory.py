"""The few facts the compile step needs about Pods, Namespaces and Nodes, taken
from their API bodies. Keeping only these (not whole bodies) keeps the
operator's memory small on big clusters and makes "did anything relevant
change?" a plain equality test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A pod in one of these phases has no running containers left to trace.
TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class PodRecord:
    """What the compile step needs of one Pod."""

    uid: str
    name: str
    namespace: str
    node: str = ""  # spec.nodeName; empty until scheduled
    labels: Mapping[str, str] = field(default_factory=dict)
    # spec.initContainers then spec.containers, in spec order.
    containers: tuple[str, ...] = ()
    terminated: bool = False
    # Container name → image, as the pod's status reports it (else its spec): shown in
    # ContainerTrace status next to each traced container.
    images: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def tracked(self) -> bool:
        """Whether the pod can have containers to trace: scheduled and not finished."""
        return bool(self.node) and not self.terminated


def pod_record(body: Mapping[str, Any]) -> PodRecord:
    """Extract a PodRecord from a Pod body (a dict or a kopf Body).

    >>> pod_record({"metadata": {"uid": "u1", "name": "p", "namespace": "ns"},
    ...             "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
    ...             "status": {"phase": "Running"}}).containers
    ('app',)
    """
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    names: list[str] = []
    images: dict[str, str] = {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or ():
            name = container.get("name")
            if name and name not in names:
                names.append(name)
                images[name] = str(container.get("image") or "")
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or ():
            if entry.get("name") in images and entry.get("image"):
                images[entry["name"]] = str(entry["image"])
    return PodRecord(
        uid=str(meta.get("uid", "")),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        node=str(spec.get("nodeName") or ""),
        labels=dict(meta.get("labels") or {}),
        containers=tuple(names),
        terminated=status.get("phase") in TERMINATED_PHASES,
        images=images,
    )


def labels_of(body: Mapping[str, Any]) -> dict[str, str]:
    """The object's labels (Namespaces and Nodes need nothing else)."""
    return dict((body.get("metadata") or {}).get("labels") or {})


def name_of(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))
