"""The backend interface's pure parts: the container-level rule (twin of
is_container_path in bpf/podtrace.c) and KubepodsRoot."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from podtrace_agent.backend import KubepodsRoot, is_container_cgroup

CTR = "c" * 64


@pytest.mark.parametrize(
    ("below", "container"),
    [
        ("besteffort", False),
        ("burstable", False),
        ("pod123", False),  # a guaranteed pod
        ("besteffort/pod123", False),
        (f"besteffort/pod123/{CTR}", True),
        (f"burstable/pod123/{CTR}", True),
        (f"pod123/{CTR}", True),  # a guaranteed pod's container
        (f"pod123/{CTR}/nested", True),
        ("kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice", False),
        (f"kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/cri-o-{CTR}.scope", True),
        ("kubepods-burstable.slice/kubepods-burstable-pod1_2.slice", False),
        (f"kubepods-pod1_2.slice/docker-{CTR}.scope", True),
        ("", False),
    ],
)
def test_container_level_rule(below: str, container: bool) -> None:
    assert is_container_cgroup(below) is container


def test_kubepods_root_reads_id_and_level(tmp_path: Path) -> None:
    (tmp_path / "kubepods.slice").mkdir()
    root = KubepodsRoot.at(tmp_path, "/kubepods.slice/")
    assert (root.path, root.level) == ("kubepods.slice", 1)
    assert root.cgroup_id == (tmp_path / "kubepods.slice").stat().st_ino
    assert root.directory == tmp_path / "kubepods.slice"


@pytest.mark.parametrize(
    "module",
    [
        "podtrace_agent.backend",
        "podtrace_agent.bpf.wire",
        "podtrace_agent.bpf.tables",
        "podtrace_agent.ftrace.parse",
        "podtrace_agent.ftrace.tracefs",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
