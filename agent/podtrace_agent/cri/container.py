"""Pure logic of enrichment: CRI status replies (or a cgroup path's identity) in,
one `Enrichment` out. No I/O; `enrich.py` makes the calls and caches.

Where each field comes from, for a container (ContainerStatus, verbose):
  pod name, namespace, UID   labels io.kubernetes.pod.{name,namespace,uid} (set by kubelet)
  container name             status.metadata.name (label io.kubernetes.container.name)
  image                      status.image.image: containerd reports the image's tag
                             here even when kubelet created the container by image ID
  image ID                   status.image_id (CRI 1.31+), else status.image_ref
  PID, cgroups path, sandbox  verbose info["info"], JSON: pid, runtimeSpec.linux.cgroupsPath,
                             sandboxID (containerd and CRI-O both use these keys)
and for a pod sandbox (PodSandboxStatus, verbose): status.metadata, and from info["info"]
pid, runtimeSpec.linux.cgroupsPath and (containerd) image, the sandbox ("pause") image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from podtrace_api.nodetracer import IdentitySource

from . import api_pb2

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
KUBERNETES_LABEL_PREFIX = "io.kubernetes."


class PathIdentity(Protocol):
    """What a cgroup path tells (podtrace_agent.identity.CgroupIdentity fits this)."""

    @property
    def pod_uid(self) -> str: ...

    @property
    def container_id(self) -> str | None: ...


@dataclass(frozen=True)
class Enrichment:
    """Who a container is. `source` says where that came from: cri (complete),
    cgroup-path (only the pod UID and container ID; `reason` says why CRI did not
    answer), or None when nothing is known (`reason` says why)."""

    container_id: str
    source: IdentitySource | None
    reason: str = ""
    pod_name: str = ""
    namespace: str = ""
    pod_uid: str = ""
    container_name: str = ""  # empty for a sandbox: it has no name in the pod spec
    image: str = ""
    image_id: str = ""
    sandbox: bool | None = None  # None: the cgroup path cannot tell
    sandbox_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None
    cgroups_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (e.g. `podtrace-agent standalone`)."""
        return {
            "container_id": self.container_id,
            "identity": self.source.value if self.source else None,
            "identity_reason": self.reason,
            "pod": self.pod_name,
            "namespace": self.namespace,
            "pod_uid": self.pod_uid,
            "container": self.container_name,
            "image": self.image,
            "image_id": self.image_id,
            "sandbox": self.sandbox,
            "sandbox_id": self.sandbox_id,
            "labels": dict(self.labels),
            "pid": self.pid,
            "cgroups_path": self.cgroups_path,
        }


def verbose_info(info: Mapping[str, str]) -> dict[str, Any]:
    """The runtime's verbose `info["info"]` JSON as a dict ({} when absent or not JSON)."""
    raw = info.get("info")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _pid(info: Mapping[str, Any]) -> int | None:
    pid = info.get("pid")
    return pid if type(pid) is int and pid > 0 else None  # JSON true is no pid


def _cgroups_path(info: Mapping[str, Any]) -> str:
    # Any field may hold any JSON value (tests/unit/test_fuzz_cri.py): check each level.
    spec = info.get("runtimeSpec")
    linux = spec.get("linux") if isinstance(spec, dict) else None
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    return path if isinstance(path, str) else ""


def _kubernetes_labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(labels.items()) if k.startswith(KUBERNETES_LABEL_PREFIX)}


def from_container_status(reply: api_pb2.ContainerStatusResponse) -> Enrichment:
    """The enrichment of a container from its verbose ContainerStatus reply."""
    status = reply.status
    labels = status.labels
    info = verbose_info(reply.info)
    sandbox_id = info.get("sandboxID", "")
    return Enrichment(
        container_id=status.id,
        source=IdentitySource.CRI,
        pod_name=labels.get(POD_NAME, ""),
        namespace=labels.get(POD_NAMESPACE, ""),
        pod_uid=labels.get(POD_UID, ""),
        container_name=status.metadata.name or labels.get(CONTAINER_NAME, ""),
        image=status.image.image,
        image_id=status.image_id or status.image_ref,
        sandbox=False,
        sandbox_id=sandbox_id if isinstance(sandbox_id, str) else "",
        labels=_kubernetes_labels(labels),
        pid=_pid(info),
        cgroups_path=_cgroups_path(info),
    )


def from_sandbox_status(reply: api_pb2.PodSandboxStatusResponse) -> Enrichment:
    """The enrichment of a pod sandbox ("pause" container) from its verbose status."""
    status = reply.status
    labels = status.labels
    info = verbose_info(reply.info)
    image = info.get("image", "")
    return Enrichment(
        container_id=status.id,
        source=IdentitySource.CRI,
        pod_name=status.metadata.name or labels.get(POD_NAME, ""),
        namespace=status.metadata.namespace or labels.get(POD_NAMESPACE, ""),
        pod_uid=status.metadata.uid or labels.get(POD_UID, ""),
        image=image if isinstance(image, str) else "",
        sandbox=True,
        sandbox_id=status.id,
        labels=_kubernetes_labels(labels),
        pid=_pid(info),
        cgroups_path=_cgroups_path(info),
    )


def from_path_identity(
    container_id: str, identity: PathIdentity | None, cgroup_path: str | None, reason: str
) -> Enrichment:
    """What is left when CRI cannot answer: the cgroup path's identity, marked as such.

    from_path_identity("abc", None, None, "runtime down").source is None
    """
    if identity is None:
        if cgroup_path:
            reason = f"{reason}; cgroup path {cgroup_path} names no pod"
        return Enrichment(container_id=container_id, source=None, reason=reason)
    return Enrichment(
        container_id=identity.container_id or container_id,
        source=IdentitySource.CGROUP_PATH,
        reason=reason,
        pod_uid=identity.pod_uid,
        cgroups_path=cgroup_path or "",
    )
