"""The discovery report: 1:1 onto NodeTracer status, JSON-able, and discover()
end to end over a /proc and a cgroup tree laid out in a temporary directory."""

from __future__ import annotations

import doctest
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

import podtrace_agent.discovery.choice
import podtrace_agent.discovery.procfs
import podtrace_agent.identity
from podtrace_agent.backend import KubepodsRoot
from podtrace_agent.discovery import discover
from podtrace_agent.discovery.nesting import Nesting
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
    Problem,
    join_messages,
)
from podtrace_api.base import MAX_MESSAGE
from podtrace_api.nodetracer import (
    BackendName,
    CgroupDriver,
    CgroupVersion,
    NodeTracerStatus,
)

CGROUP = CgroupReport(
    version=CgroupVersion.HYBRID,
    driver=CgroupDriver.CGROUPFS,
    root="/sys/fs/cgroup/unified",
    host_namespace=True,
    namespace_root="/",
    kubepods_path="kubepods",
    kubepods_id=44,
    kubepods_level=1,
)


def test_reports_map_onto_nodetracer_status() -> None:
    status = NodeTracerStatus(
        kernel=KernelReport("6.18.44", True, "/sys/kernel/tracing").to_status(),
        cgroup=CGROUP.to_status(),
        backend=BackendReport(BackendName.BCC, "auto: ok").to_status(),
    )
    wire = status.to_wire()
    assert wire["cgroup"] == {
        "version": "hybrid", "driver": "cgroupfs", "root": "/sys/fs/cgroup/unified",
        "hostNamespace": True, "namespaceRoot": "/", "kubepodsPath": "kubepods", "kubepodsId": 44,
        "kubepodsLevel": 1, "message": "",
    }
    assert wire["kernel"] == {"release": "6.18.44", "btf": True, "tracefs": "/sys/kernel/tracing"}
    assert wire["backend"] == {"name": "bcc", "reason": "auto: ok"}


def test_every_cgroup_report_field_reaches_status_or_is_agent_side() -> None:
    status_fields = set(type(CGROUP.to_status()).model_fields)
    report_fields = set(CgroupReport.__dataclass_fields__)
    assert report_fields - status_fields == {"other_kubepods"}
    assert status_fields - report_fields == set()


def test_long_messages_fit_status() -> None:
    problems = [Problem("X", "m" * 700), Problem("Y", "n" * 700)]
    message = join_messages(problems)
    assert len(message) == MAX_MESSAGE and message.endswith("…")
    CgroupReport(message=message).to_status()
    BackendReport(BackendName.NONE, "r" * 5000).to_status()


def test_kubepods_for_the_backend() -> None:
    assert CGROUP.kubepods() == KubepodsRoot(Path("/sys/fs/cgroup/unified"), "kubepods", 44, 1)
    assert CgroupReport(root="/sys/fs/cgroup").kubepods() is None
    nested = CgroupReport(
        root="/sys/fs/cgroup", namespace_root="/system.slice/docker-1.scope",
        kubepods_path="kubelet.slice/kubelet-kubepods.slice", kubepods_id=9, kubepods_level=4,
    )
    assert nested.kubepods() == KubepodsRoot(
        Path("/sys/fs/cgroup"), "kubelet.slice/kubelet-kubepods.slice", 9, 4,
        "/system.slice/docker-1.scope",
    )
    # a nested mount whose place is unknown cannot be traced
    assert replace(nested, namespace_root="").kubepods() is None


def test_report_is_json() -> None:
    report = DiscoveryReport(
        kernel=KernelReport("6.18.44", True, ""),
        cgroup=CGROUP,
        bcc=BccCheck(False, "no headers"),
        backend=BackendReport(BackendName.NONE, "no tracefs"),
        problems=(Problem("TracefsMissing", "mount it", fatal=True),),
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["cgroup"]["kubepods_id"] == 44
    assert data["backend"] == {"name": "none", "reason": "no tracefs"}
    assert data["problems"] == [{"reason": "TracefsMissing", "message": "mount it",
                                 "fatal": True}]
    assert [p.reason for p in report.fatal] == ["TracefsMissing"]


@pytest.mark.parametrize(
    "module",
    [podtrace_agent.identity, podtrace_agent.discovery.procfs, podtrace_agent.discovery.choice],
)
def test_docstring_examples(module: object) -> None:
    failed, tried = doctest.testmod(module)  # type: ignore[arg-type]
    assert tried > 0 and failed == 0


# --- discover() over a machine laid out in a directory ------------------------------

UID = "11111111-2222-4333-8444-555555555555"


def fake_machine(tmp_path: Path, cgroup_line: str) -> tuple[Path, Path]:
    """A /proc whose mountinfo puts cgroup2 and tracefs in tmp_path, and that cgroup2 tree."""
    cgroup2 = tmp_path / "cgroup"
    tracefs = tmp_path / "tracing"
    (cgroup2 / f"kubepods/besteffort/pod{UID}/{'a' * 64}").mkdir(parents=True)
    (tracefs / "events").mkdir(parents=True)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "filesystems").write_text("nodev\tcgroup2\nnodev\ttracefs\n")
    (proc / "self/mountinfo").write_text(
        f"30 23 0:28 / {cgroup2} rw,relatime - cgroup2 cgroup2 rw\n"
        f"31 23 0:12 / {tracefs} rw,relatime - tracefs tracefs rw\n"
    )
    (proc / "self/cgroup").write_text(cgroup_line)
    return proc, cgroup2


def test_discover_end_to_end(tmp_path: Path) -> None:
    agent = f"/kubepods/besteffort/pod{UID}/{'b' * 64}"
    proc, cgroup2 = fake_machine(tmp_path, f"0::{agent}\n")
    asked = []

    def place(mount: str, tracefs: str, own: str) -> Nesting:
        asked.append((mount, tracefs, own))
        return Nesting("/system.slice/node.scope")

    report = discover(cgroupfs=str(cgroup2), proc=proc, allow_mount=False, place=place)

    assert report.cgroup.version is CgroupVersion.V2
    assert report.cgroup.root == str(cgroup2)
    assert report.cgroup.kubepods_path == "kubepods"
    assert report.cgroup.kubepods_id == os.stat(cgroup2 / "kubepods").st_ino
    assert report.cgroup.driver is CgroupDriver.CGROUPFS
    # a temporary directory is not a hierarchy's root (inode 1): a nested mount,
    # placed in the host's hierarchy, information and not a problem
    assert asked == [(str(cgroup2), str(tmp_path / "tracing"), agent)]
    assert report.cgroup.host_namespace is False
    assert report.cgroup.namespace_root == "/system.slice/node.scope"
    assert report.cgroup.kubepods_level == 3  # absolute
    assert report.problems == () and report.cgroup.message == ""
    root = report.cgroup.kubepods()
    assert root is not None and root.root_path == "/system.slice/node.scope"
    assert report.kernel.tracefs == str(tmp_path / "tracing")
    assert report.kernel.release == os.uname().release
    assert report.agent_cgroup == agent
    assert (report.backend.name is BackendName.BCC) == report.bcc.available
    json.dumps(report.to_json())


def test_discover_nested_but_unplaced_is_fatal(tmp_path: Path) -> None:
    proc, cgroup2 = fake_machine(tmp_path, "0::/\n")
    unplaced = Problem("CgroupNestingUnresolved", "why", fatal=True)
    report = discover(cgroupfs=str(cgroup2), proc=proc, allow_mount=False,
                      place=lambda *_: unplaced)
    assert report.cgroup.kubepods_path == "kubepods"  # still reported
    assert (report.cgroup.namespace_root, report.cgroup.kubepods_level) == ("", None)
    assert report.cgroup.kubepods() is None
    assert report.fatal == [unplaced]


def test_discover_without_kubepods_is_fatal(tmp_path: Path) -> None:
    proc, cgroup2 = fake_machine(tmp_path, "0::/\n")
    (cgroup2 / f"kubepods/besteffort/pod{UID}/{'a' * 64}").rmdir()
    (cgroup2 / f"kubepods/besteffort/pod{UID}").rmdir()
    (cgroup2 / "kubepods/besteffort").rmdir()
    (cgroup2 / "kubepods").rename(cgroup2 / "system.slice")
    report = discover(cgroupfs=str(cgroup2), proc=proc, allow_mount=False)
    assert report.cgroup.kubepods_id is None and report.cgroup.kubepods() is None
    assert [p.reason for p in report.fatal] == ["KubepodsNotFound"]
