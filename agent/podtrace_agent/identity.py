"""Pod and container identity from a cgroup path, with no I/O.

The path is all the kernel gives the agent for a new cgroup (the cgroup_mkdir
tracepoint, a directory in the cgroupfs), and it already says which pod and
container the cgroup belongs to: kubelet names the pod cgroup after the pod
UID, the runtime names the container cgroup after the container ID. Names,
namespace and image come later from CRI; this module is the part that works
without any runtime socket.

Formats, and where they come from:

* kubelet's cgroup manager (pkg/kubelet/cm/cgroup_manager_linux.go, qos_container_manager
  and pod_container_manager): the cgroup name ["kubepods", "<qos>", "pod<uid>"] is
  - cgroupfs driver: joined with "/": ``/kubepods/burstable/pod<uid>``;
  - systemd driver (``ToSystemd``, ``escapeSystemdCgroupName``): every prefix becomes
    a nested slice, "-" inside a part is escaped to "_":
    ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice``.
  Guaranteed pods have no QoS level (``/kubepods/pod<uid>``, ``kubepods-pod<uid_>.slice``).
  ``--cgroup-root`` prefixes every part (kind nodes: ``/kubelet.slice/kubelet-kubepods.slice/
  kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod<uid_>.slice``).
* the container cgroup, inside the pod cgroup:
  - runc's systemd driver (libcontainer/cgroups/systemd, ``getUnitName``) turns the
    cgroupsPath "<slice>:<prefix>:<id>" into the unit ``<prefix>-<id>.scope``; the prefix
    is "cri-containerd" (containerd's CRI plugin), "crio" (CRI-O), "docker" (docker and
    cri-dockerd), "libpod" (podman);
  - runc's fs (cgroupfs) driver uses the cgroupsPath as is: containerd, docker and
    k3s/microk8s (containerd) give ``<pod cgroup>/<id>``, CRI-O gives
    ``<pod cgroup>/crio-<id>`` (internal/config/cgmgr/cgroupfs.go);
  - CRI-O's conmon monitor lives in ``crio-conmon-<id>.scope``: not a container;
  - a kubelet on the systemd driver with containerd on cgroupfs (a common
    misconfiguration) makes runc's fs driver take the systemd form literally, so the
    container lands in ``/system.slice/containerd.service/<pod slice>:cri-containerd:<id>``.
* anything below a container cgroup (crun's "container" subgroup under CRI-O, systemd
  running inside the container) still belongs to that container: ``subgroup``.

The pause (sandbox) container cannot be told from an application container by
its path: both are ``<prefix>-<id>`` under the pod. Only CRI knows which ID is
the sandbox, so ``is_sandbox`` is None here and is filled by enrichment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from podtrace_api.nodetracer import CgroupDriver


class QosClass(StrEnum):
    GUARANTEED = "guaranteed"
    BURSTABLE = "burstable"
    BESTEFFORT = "besteffort"


class Runtime(StrEnum):
    CONTAINERD = "containerd"
    CRIO = "crio"
    DOCKER = "docker"
    PODMAN = "podman"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CgroupIdentity:
    """Who a cgroup belongs to, as far as its path tells.

    container_id is None for a pod-level cgroup. runtime is UNKNOWN when the
    container cgroup has no runtime prefix (cgroupfs driver with containerd or
    docker). is_sandbox is always None here: see the module docstring.
    """

    pod_uid: str
    qos: QosClass
    driver: CgroupDriver
    container_id: str | None = None
    runtime: Runtime = Runtime.UNKNOWN
    subgroup: str = ""
    is_sandbox: bool | None = None

    @property
    def is_container(self) -> bool:
        return self.container_id is not None


# Kubernetes UIDs are UUIDs; static pods' UIDs are an md5 in hex (kubelet's
# config/common.go). In systemd names the UUID's "-" are escaped to "_".
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_ID = r"[0-9a-f]{64}"
_PREFIXES = {
    "cri-containerd": Runtime.CONTAINERD,
    "crio": Runtime.CRIO,
    "docker": Runtime.DOCKER,
    "libpod": Runtime.PODMAN,
}
_PREFIX = "|".join(re.escape(p) for p in _PREFIXES)

_SYSTEMD_POD = re.compile(rf"(?P<stem>[a-z0-9_.-]*?)pod(?P<uid>{_UID})\.slice")
_CGROUPFS_POD = re.compile(rf"pod(?P<uid>{_UID})")
_CONTAINER = re.compile(rf"(?:(?P<prefix>{_PREFIX})-)?(?P<id>{_ID})(?:\.scope)?")
_MISCONFIGURED = re.compile(
    rf"(?P<slice>[a-z0-9_.-]*?pod(?:{_UID})\.slice):(?P<prefix>{_PREFIX}):(?P<id>{_ID})"
)
_CGROUPFS_QOS = {"besteffort": QosClass.BESTEFFORT, "burstable": QosClass.BURSTABLE}


def normalize_uid(uid: str) -> str:
    """A pod UID as the API shows it (systemd escaping undone).

    >>> normalize_uid("6b1b2c3d_0000_4a4a_8b8b_0123456789ab")
    '6b1b2c3d-0000-4a4a-8b8b-0123456789ab'
    """
    return uid.replace("_", "-")


def parse(path: str) -> CgroupIdentity | None:
    """The pod and container a cgroup path belongs to, or None when it is not a
    pod's cgroup (kubepods itself, a QoS level, conmon, anything outside pods).

    `path` may be absolute in the hierarchy or relative to a cgroup mount; any
    prefix before the pod level is accepted (cgroup roots, nested nodes).

    >>> parse("/kubepods/besteffort/pod0a1b2c3d-0000-4a4a-8b8b-0123456789ab").qos
    <QosClass.BESTEFFORT: 'besteffort'>
    """
    parts = [p for p in path.split("/") if p]
    for index, part in enumerate(parts):
        pod = _pod_level(parts, index)
        if pod is not None:
            return _below_pod(pod, parts[index + 1 :])
        if ":" in part:
            found = _misconfigured(part, parts[index + 1 :])
            if found is not None:
                return found
    return None


def _pod_level(parts: list[str], index: int) -> CgroupIdentity | None:
    """The pod identity if parts[index] is a pod cgroup's name, else None."""
    part = parts[index]
    match = _SYSTEMD_POD.fullmatch(part)
    if match is not None:
        stem = match["stem"]
        # Every systemd pod slice is named after its full cgroup name, which starts
        # at (the cgroup root and) "kubepods": kubepods-[<qos>-]pod<uid>.slice.
        if "kubepods" not in stem or not stem.endswith("-"):
            return None
        return CgroupIdentity(
            pod_uid=normalize_uid(match["uid"]),
            qos=_systemd_qos(stem),
            driver=CgroupDriver.SYSTEMD,
        )
    match = _CGROUPFS_POD.fullmatch(part)
    if match is None or index == 0:
        return None
    parent = parts[index - 1]
    if parent in _CGROUPFS_QOS and index >= 2 and parts[index - 2] == "kubepods":
        qos = _CGROUPFS_QOS[parent]
    elif parent == "kubepods":
        qos = QosClass.GUARANTEED
    else:
        return None
    return CgroupIdentity(
        pod_uid=normalize_uid(match["uid"]), qos=qos, driver=CgroupDriver.CGROUPFS
    )


def _systemd_qos(stem: str) -> QosClass:
    """QoS from the part of a pod slice name before "pod": "kubepods-burstable-"."""
    for qos in (QosClass.BESTEFFORT, QosClass.BURSTABLE):
        if stem.endswith(f"-{qos.value}-"):
            return qos
    return QosClass.GUARANTEED


def _below_pod(pod: CgroupIdentity, rest: list[str]) -> CgroupIdentity | None:
    """Pod identity extended by the container cgroup (and subgroup) under it."""
    if not rest:
        return pod
    match = _CONTAINER.fullmatch(rest[0])
    if match is None:
        return None  # crio-conmon-<id>, or nothing kubelet or a runtime creates
    prefix = match["prefix"]
    return CgroupIdentity(
        pod_uid=pod.pod_uid,
        qos=pod.qos,
        driver=pod.driver,
        container_id=match["id"],
        runtime=_PREFIXES[prefix] if prefix else Runtime.UNKNOWN,
        subgroup="/".join(rest[1:]),
    )


def _misconfigured(part: str, rest: list[str]) -> CgroupIdentity | None:
    """`<pod slice>:<prefix>:<id>`: a systemd cgroupsPath taken literally by runc's fs driver."""
    match = _MISCONFIGURED.fullmatch(part)
    if match is None:
        return None
    pod = _pod_level([match["slice"]], 0)
    if pod is None:
        return None
    return CgroupIdentity(
        pod_uid=pod.pod_uid,
        qos=pod.qos,
        driver=CgroupDriver.CGROUPFS,
        container_id=match["id"],
        runtime=_PREFIXES[match["prefix"]],
        subgroup="/".join(rest),
    )
