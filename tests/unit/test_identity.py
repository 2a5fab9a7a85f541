"""Identity from cgroup paths: a table of real-world paths, and properties over
every combination of driver, runtime, QoS and cgroup root."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from podtrace_agent.identity import CgroupIdentity, QosClass, Runtime, normalize_uid, parse
from podtrace_api.nodetracer import CgroupDriver

SYSTEMD = CgroupDriver.SYSTEMD
CGROUPFS = CgroupDriver.CGROUPFS
UID = "2edf54f8-6911-449f-9abe-3d468a770d6b"
UID_ = UID.replace("-", "_")
CID = "02de72688d6bb0908d279bbbb05ffa9d7e0b2ae17a8bf23683a33cc1349e55aa"
STATIC_UID = "6d6b2a1a1f8f4d0c2e2b0a9d3c1e8f7a"  # kubelet's md5 UID of a static pod


def ident(
    qos: QosClass,
    driver: CgroupDriver,
    cid: str | None = CID,
    runtime: Runtime = Runtime.UNKNOWN,
    uid: str = UID,
    subgroup: str = "",
) -> CgroupIdentity:
    return CgroupIdentity(uid, qos, driver, cid, runtime, subgroup)


# (path, expected identity) as seen in /proc/<pid>/cgroup, cgroup_mkdir's path
# or a cgroupfs walk on real nodes.
REAL_WORLD = [
    # containerd, systemd driver (kubeadm on a systemd distribution)
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope",
     ident(QosClass.BURSTABLE, SYSTEMD, runtime=Runtime.CONTAINERD)),
    # containerd, cgroupfs driver (this machine's containerd, k3s, microk8s)
    (f"/kubepods/besteffort/pod{UID}/{CID}", ident(QosClass.BESTEFFORT, CGROUPFS)),
    (f"kubepods/burstable/pod{UID}/{CID}", ident(QosClass.BURSTABLE, CGROUPFS)),
    # guaranteed pods have no QoS level
    (f"/kubepods/pod{UID}/{CID}", ident(QosClass.GUARANTEED, CGROUPFS)),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
     ident(QosClass.GUARANTEED, SYSTEMD, runtime=Runtime.CONTAINERD)),
    # CRI-O: systemd, crun's "container" subgroup, cgroupfs, and conmon (never a container)
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"crio-{CID}.scope", ident(QosClass.BESTEFFORT, SYSTEMD, runtime=Runtime.CRIO)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-{CID}.scope/container",
     ident(QosClass.BURSTABLE, SYSTEMD, runtime=Runtime.CRIO, subgroup="container")),
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", ident(QosClass.BURSTABLE, CGROUPFS,
                                                      runtime=Runtime.CRIO)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"crio-conmon-{CID}.scope", None),
    (f"/kubepods/burstable/pod{UID}/crio-conmon-{CID}", None),
    # docker / cri-dockerd, podman
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"docker-{CID}.scope", ident(QosClass.BESTEFFORT, SYSTEMD, runtime=Runtime.DOCKER)),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/libpod-{CID}.scope",
     ident(QosClass.GUARANTEED, SYSTEMD, runtime=Runtime.PODMAN)),
    # kind node: kubelet --cgroup-root=/kubelet, node itself a docker container
    (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     ident(QosClass.BESTEFFORT, SYSTEMD, runtime=Runtime.CONTAINERD)),
    ("/system.slice/docker-3350ade4226f0adcd9e4e9545d7c2a16a5aa362d12315f2a88e2024cea1246cf"
     f".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     ident(QosClass.BESTEFFORT, SYSTEMD, runtime=Runtime.CONTAINERD)),
    (f"/docker/{'3' * 64}/kubepods/besteffort/pod{UID}/{CID}",
     ident(QosClass.BESTEFFORT, CGROUPFS)),
    # kubelet on systemd, containerd on cgroupfs: runc's fs driver takes the systemd
    # cgroupsPath literally, under containerd's own cgroup
    (f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}",
     ident(QosClass.BURSTABLE, CGROUPFS, runtime=Runtime.CONTAINERD)),
    # static pods: md5 UIDs
    (f"/kubepods/burstable/pod{STATIC_UID}/{CID}",
     ident(QosClass.BURSTABLE, CGROUPFS, uid=STATIC_UID)),
    # pod-level cgroups
    (f"/kubepods/besteffort/pod{UID}", ident(QosClass.BESTEFFORT, CGROUPFS, cid=None)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
     ident(QosClass.BURSTABLE, SYSTEMD, cid=None)),
    # not a pod
    ("/", None),
    ("", None),
    ("/kubepods", None),
    ("/kubepods/besteffort", None),
    ("/kubepods.slice/kubepods-besteffort.slice", None),
    ("/system.slice/containerd.service", None),
    (f"/system.slice/docker-{CID}.scope", None),  # a plain docker container: not a pod
    (f"/user.slice/pod{UID}/{CID}", None),  # "pod<uid>" outside kubepods
    (f"/kubepods/besteffort/pod{UID}/not-a-container", None),
    (f"/kubepods/besteffort/pod{UID}/{CID[:-1]}", None),  # 63 hex digits
    (f"/kubepods.slice/kubepods-besteffort.slice/pod{UID_}.slice/{CID}", None),  # no stem
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"containerd-{CID}.scope", None),  # unknown runtime prefix
]


@pytest.mark.parametrize(("path", "expected"), REAL_WORLD)
def test_real_world_paths(path: str, expected: CgroupIdentity | None) -> None:
    assert parse(path) == expected


def test_sandbox_is_unknown_from_the_path() -> None:
    found = parse(f"/kubepods/besteffort/pod{UID}/{CID}")
    assert found is not None and found.is_sandbox is None and found.is_container


def test_normalize_uid() -> None:
    assert normalize_uid(UID_) == UID
    assert normalize_uid(STATIC_UID) == STATIC_UID


# --- properties ------------------------------------------------------------------

uuids = st.uuids().map(str)
static_uids = st.text("0123456789abcdef", min_size=32, max_size=32)
container_ids = st.text("0123456789abcdef", min_size=64, max_size=64)
# runtime prefix per driver: what each runtime names its container cgroup
SYSTEMD_RUNTIMES = {
    "cri-containerd": Runtime.CONTAINERD, "crio": Runtime.CRIO,
    "docker": Runtime.DOCKER, "libpod": Runtime.PODMAN,
}
CGROUPFS_RUNTIMES = {"": Runtime.UNKNOWN, "crio": Runtime.CRIO}
roots = st.sampled_from(["", "kubelet", "docker/" + "3" * 64, "system.slice/docker-x.scope"])
subgroups = st.sampled_from(["", "container", "init.scope", "system.slice/a.service"])


def build_path(
    driver: CgroupDriver,
    root: str,
    qos: QosClass,
    uid: str,
    prefix: str | None,
    cid: str,
    subgroup: str,
) -> str:
    """The path kubelet and the runtime would create (prefix None: pod level only)."""
    parts: list[str] = []
    if driver is CGROUPFS:
        parts += [root] if root else []
        parts.append("kubepods")
        if qos is not QosClass.GUARANTEED:
            parts.append(qos.value)
        parts.append(f"pod{uid}")
        if prefix is not None:
            parts.append(f"{prefix}-{cid}" if prefix else cid)
    else:
        # systemd: --cgroup-root=/kubelet gives kubelet.slice/kubelet-kubepods.slice/...
        names = ["kubelet", "kubepods"] if root == "kubelet" else ["kubepods"]
        if root == "kubelet":
            parts.append("kubelet.slice")
        elif root:
            parts.append(root)
        parts.append("-".join(names) + ".slice")
        if qos is not QosClass.GUARANTEED:
            names.append(qos.value)
            parts.append("-".join(names) + ".slice")
        parts.append("-".join([*names, f"pod{uid.replace('-', '_')}"]) + ".slice")
        if prefix is not None:
            parts.append(f"{prefix}-{cid}.scope")
    if prefix is not None and subgroup:
        parts.append(subgroup)
    return "/" + "/".join(parts)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[str, CgroupIdentity]:
    driver = draw(st.sampled_from([SYSTEMD, CGROUPFS]))
    runtimes = SYSTEMD_RUNTIMES if driver is SYSTEMD else CGROUPFS_RUNTIMES
    prefix = draw(st.none() | st.sampled_from(sorted(runtimes)))
    qos = draw(st.sampled_from(list(QosClass)))
    uid = draw(uuids | static_uids)
    cid = draw(container_ids)
    subgroup = draw(subgroups) if prefix is not None else ""
    path = build_path(driver, draw(roots), qos, uid, prefix, cid, subgroup)
    expected = CgroupIdentity(
        pod_uid=uid,
        qos=qos,
        driver=driver,
        container_id=None if prefix is None else cid,
        runtime=Runtime.UNKNOWN if prefix is None else runtimes[prefix],
        subgroup=subgroup,
    )
    return path, expected


@given(layouts())
@example((f"/kubelet/kubepods/pod{UID}/{CID}",
          ident(QosClass.GUARANTEED, CGROUPFS)))
def test_parse_inverts_what_kubelet_and_runtimes_create(case: tuple[str, CgroupIdentity]) -> None:
    path, expected = case
    assert parse(path) == expected
    assert parse(path.lstrip("/")) == expected  # relative to a cgroup mount


@given(layouts())
def test_conmon_is_never_a_container(case: tuple[str, CgroupIdentity]) -> None:
    path, expected = case
    if expected.container_id is None:
        return
    suffix = ".scope" if expected.driver is SYSTEMD else ""
    pod_dir = path[: path.index(expected.container_id)].rsplit("/", 1)[0]
    assert parse(pod_dir) == CgroupIdentity(expected.pod_uid, expected.qos, expected.driver)
    assert parse(f"{pod_dir}/crio-conmon-{expected.container_id}{suffix}") is None


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_parse_never_raises(text: str) -> None:
    found = parse(text)
    assert found is None or isinstance(found, CgroupIdentity)


@given(layouts())
def test_above_the_pod_is_no_identity(case: tuple[str, CgroupIdentity]) -> None:
    path, expected = case
    pod_at = path.index("pod" + expected.pod_uid.replace("-", "_" if expected.driver is SYSTEMD
                                                          else "-"))
    above = path[:pod_at].rsplit("/", 1)[0]  # the pod's parent: QoS level or kubepods
    assert above and parse(above) is None
