"""The initial scan over real directory trees laid out like a node's cgroup2."""

from __future__ import annotations

import os
from pathlib import Path

from podtrace_agent.discovery.tree import FsTree
from podtrace_agent.identity import QosClass, Runtime
from podtrace_agent.scan import scan

U1 = "11111111-2222-4333-8444-555555555555"
U2 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
A, B, C = "a" * 64, "b" * 64, "c" * 64


def make(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).mkdir(parents=True, exist_ok=True)


def test_scan_cgroupfs(tmp_path: Path) -> None:
    make(tmp_path,
         f"kubepods/besteffort/pod{U1}/{A}", f"kubepods/besteffort/pod{U1}/{B}",
         f"kubepods/pod{U2}/{C}", "kubepods/burstable",
         "system.slice/containerd.service")
    found = list(scan(FsTree(tmp_path), "kubepods"))
    assert [(c.path, c.identity.container_id, c.identity.pod_uid, c.identity.qos)
            for c in found] == [
        (f"kubepods/besteffort/pod{U1}/{A}", A, U1, QosClass.BESTEFFORT),
        (f"kubepods/besteffort/pod{U1}/{B}", B, U1, QosClass.BESTEFFORT),
        (f"kubepods/pod{U2}/{C}", C, U2, QosClass.GUARANTEED),
    ]
    assert [c.cgroup_id for c in found] == [os.stat(tmp_path / c.path).st_ino for c in found]


def test_scan_systemd_under_a_cgroup_root(tmp_path: Path) -> None:
    u1 = U1.replace("-", "_")
    kubepods = "kubelet.slice/kubelet-kubepods.slice"
    pod = f"{kubepods}/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{u1}.slice"
    make(tmp_path, f"{pod}/crio-{A}.scope/container", f"{pod}/crio-conmon-{A}.scope",
         f"{pod}/crio-{B}.scope")
    found = list(scan(FsTree(tmp_path), "/" + kubepods + "/"))
    assert [(c.path.removeprefix(pod + "/"), c.identity.container_id, c.identity.subgroup)
            for c in found] == [
        (f"crio-{A}.scope", A, ""),
        (f"crio-{A}.scope/container", A, "container"),
        (f"crio-{B}.scope", B, ""),
    ]
    assert {c.identity.runtime for c in found} == {Runtime.CRIO}


def test_scan_does_not_walk_what_is_not_a_pod(tmp_path: Path) -> None:
    make(tmp_path, f"kubepods/besteffort/stray/pod{U1}/{A}",
         f"kubepods/besteffort/pod{U1}/crio-conmon-{A}/{B}")
    assert list(scan(FsTree(tmp_path), "kubepods")) == []


def test_scan_depth_is_bounded(tmp_path: Path) -> None:
    deep = f"kubepods/besteffort/pod{U1}/{A}/" + "/".join("s" * 10)
    make(tmp_path, deep)
    found = list(scan(FsTree(tmp_path), "kubepods", max_depth=5))
    assert [c.identity.subgroup for c in found] == ["", "s", "s/s"]


def test_scan_of_a_missing_kubepods(tmp_path: Path) -> None:
    assert list(scan(FsTree(tmp_path), "kubepods")) == []


def test_scan_while_cgroups_are_removed(tmp_path: Path) -> None:
    make(tmp_path, f"kubepods/besteffort/pod{U1}/{A}", f"kubepods/besteffort/pod{U2}/{B}")
    walk = scan(FsTree(tmp_path), "kubepods")
    first = next(walk)
    (tmp_path / f"kubepods/besteffort/pod{U2}/{B}").rmdir()
    (tmp_path / f"kubepods/besteffort/pod{U2}").rmdir()  # listed already, gone when entered
    assert first.identity.container_id == A
    assert list(walk) == []
