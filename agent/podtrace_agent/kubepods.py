"""The one rule for "is this cgroup a container": a pure function over the path
relative to the kubepods cgroup.

Below kubepods kubelet makes (pkg/kubelet/cm, qos_container_manager and
pod_container_manager) a QoS level for besteffort and burstable pods, then a
pod cgroup; guaranteed pods sit directly below kubepods. The runtime makes the
container cgroup inside the pod cgroup. So a container is <qos>/<pod>/<ctr> or
<pod>/<ctr>, and anything below a container is still that container's.

Only the first level needs a name to tell the two apart, and kubelet derives
the QoS names from the kubepods name itself: cgroupfs ``besteffort``,
``burstable``; systemd ``<stem>-besteffort.slice`` for kubepods ``<stem>.slice``
(``kubepods-besteffort.slice``; with kind's cgroup root ``/kubelet``,
``kubelet-kubepods-besteffort.slice``). Deriving them, rather than listing
known spellings, is what keeps kind's QoS slices from being taken for pods.

The BPF program applies the same rule in kernel at cgroup_mkdir (bpf/container.h,
``is_container_path``) with the names `qos_names` gives as its knobs;
tests/unit/test_container_rule.py runs one table against both.
"""

from __future__ import annotations

SLICE = ".slice"


def kubepods_name(kubepods: str) -> str:
    """The last component of a kubepods path.

    >>> kubepods_name("/kubelet.slice/kubelet-kubepods.slice/")
    'kubelet-kubepods.slice'
    """
    return kubepods.strip("/").rsplit("/", 1)[-1]


def qos_names(kubepods: str) -> tuple[str, str]:
    """The besteffort and burstable cgroup names kubelet makes below `kubepods`.

    >>> qos_names("kubepods")
    ('besteffort', 'burstable')
    >>> qos_names("kubelet.slice/kubelet-kubepods.slice")
    ('kubelet-kubepods-besteffort.slice', 'kubelet-kubepods-burstable.slice')
    """
    name = kubepods_name(kubepods)
    if name.endswith(SLICE):
        stem = name[: -len(SLICE)]
        return f"{stem}-besteffort{SLICE}", f"{stem}-burstable{SLICE}"
    return "besteffort", "burstable"


def is_container_cgroup(kubepods: str, below: str) -> bool:
    """Whether the cgroup at `below` (relative to the kubepods cgroup `kubepods`)
    is a container's cgroup or nested in one.

    >>> is_container_cgroup("kubepods", "besteffort/pod1/abc")
    True
    >>> is_container_cgroup("kubepods", "besteffort/pod1")
    False
    >>> is_container_cgroup("kubepods", "pod1/abc")
    True
    """
    parts = [p for p in below.split("/") if p]
    if not parts:
        return False
    container_depth = 3 if parts[0] in qos_names(kubepods) else 2
    return len(parts) >= container_depth
