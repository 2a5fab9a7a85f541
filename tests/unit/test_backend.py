"""The backend interface's pure parts: KubepodsRoot and absolute paths (the
container rule is tests/unit/test_container_rule.py)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from podtrace_agent.backend import KubepodsRoot, kubepods_absolute, mount_relative


def test_kubepods_root_reads_id_and_level(tmp_path: Path) -> None:
    (tmp_path / "kubepods.slice").mkdir()
    root = KubepodsRoot.at(tmp_path, "/kubepods.slice/")
    assert (root.path, root.level) == ("kubepods.slice", 1)
    assert root.cgroup_id == (tmp_path / "kubepods.slice").stat().st_ino
    assert root.directory == tmp_path / "kubepods.slice"


def test_kubepods_root_below_a_namespace_root_is_absolute(tmp_path: Path) -> None:
    (tmp_path / "kubelet.slice/kubelet-kubepods.slice").mkdir(parents=True)
    root = KubepodsRoot.at(tmp_path, "kubelet.slice/kubelet-kubepods.slice", "/node/")
    assert (root.level, root.root_path) == (3, "/node")
    assert kubepods_absolute(root) == "/node/kubelet.slice/kubelet-kubepods.slice"
    assert mount_relative(root, "/node/kubelet.slice/x") == "kubelet.slice/x"
    assert mount_relative(root, "/nodeB/kubelet.slice/x") is None


@pytest.mark.parametrize(
    "module",
    [
        "podtrace_agent.backend",
        "podtrace_agent.kubepods",
        "podtrace_agent.scan",
        "podtrace_agent.discovery.nesting",
        "podtrace_agent.bpf.wire",
        "podtrace_agent.bpf.tables",
        "podtrace_agent.bpf.rows",
        "podtrace_agent.bpf.loader",
        "podtrace_agent.ftrace.parse",
        "podtrace_agent.ftrace.tracefs",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
