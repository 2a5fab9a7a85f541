"""Seccomp profiles installed on the nodes: who holds a file name, what the install
ConfigMap holds, what an agent writes into its seccomp directory and reports, and the
trace status the operator makes of those reports."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import podtrace_agent.cluster.seccompdir as seccompdir
import podtrace_api.names as names
import podtrace_api.seccompinstall as seccompinstall
import podtrace_operator.installs as installs
from podtrace_agent.cluster.seccompdir import SeccompDir, TraceProfiles, wanted
from podtrace_api.containertrace import (
    ContainerProfile,
    ContainerTraceStatus,
    SeccompProfileResult,
    SyscallCoverage,
)
from podtrace_api.nodetracer import InstallFailure, SeccompInstallStatus
from podtrace_api.seccompinstall import digest, file_name, valid_file_name
from podtrace_operator.installs import Claims, Holder, InstallPlan, install_files, with_install
from podtrace_operator.reports import NodeReport

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PROFILE = json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []})
DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
DNS_NAME = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z").filter(
    lambda n: len(n) <= 253)


@pytest.mark.parametrize("module", [names, seccompinstall, seccompdir, installs])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


@given(DNS_LABEL, DNS_NAME, DNS_LABEL)
def test_every_file_name_is_one_an_agent_writes(namespace: str, trace: str, container: str
                                                ) -> None:  # fmt: skip
    name = file_name(namespace, trace, container)
    assert valid_file_name(name), name
    assert len(name) <= 253 and name.startswith(f"{namespace}-"[:50])


def test_a_file_name_belongs_to_the_first_trace_that_claims_it() -> None:
    claims = Claims()
    first, second = Holder("u1", "a/b-c"), Holder("u2", "a-b/c")
    # Namespace a, trace b-c and namespace a-b, trace c: both make a-b-c-d.json.
    name = file_name("a", "b-c", "d")
    assert name == file_name("a-b", "c", "d")
    assert claims.claim(first, [name]) == ({name}, "")
    held, why = claims.claim(second, [name, "a-b-c-e.json"])
    assert held == {"a-b-c-e.json"}
    assert why.startswith("NameTaken: a-b-c-d.json is held by trace a/b-c")
    assert claims.claim(first, [name]) == ({name}, "")  # its own stays its own
    claims.release("u1")
    assert claims.claim(second, [name, "a-b-c-e.json"]) == ({name, "a-b-c-e.json"}, "")


def test_a_trace_lets_go_of_names_it_no_longer_asks_for() -> None:
    claims = Claims()
    claims.claim(Holder("u1", "a/t"), ["a-t-x.json", "a-t-y.json"])
    claims.claim(Holder("u1", "a/t"), ["a-t-x.json"])
    assert claims.claim(Holder("u2", "b/t"), ["a-t-y.json"]) == ({"a-t-y.json"}, "")


def test_no_more_traces_install_than_every_node_can_report() -> None:
    claims = Claims(limit=2)
    for uid in ("u1", "u2"):
        assert claims.claim(Holder(uid, f"n/{uid}"), [f"n-{uid}-c.json"])[1] == ""
    held, why = claims.claim(Holder("u3", "n/u3"), ["n-u3-c.json"])
    assert held == set() and why.startswith("TooManyInstalled: 2 traces")
    # one already holding names may change them
    assert claims.claim(Holder("u1", "n/u1"), ["n-u1-d.json"]) == ({"n-u1-d.json"}, "")


def _status(*containers: str) -> ContainerTraceStatus:
    return ContainerTraceStatus(seccomp_profile=SeccompProfileResult(
        config_map="rec-seccomp", syscalls=1,
        containers=[ContainerProfile(container=c, key=f"{c}.json", replicas=1,
                                     syscalls=[SyscallCoverage(name="read", replicas=1)])
                    for c in containers]))  # fmt: skip


def _report(name: str, installs: SeccompInstallStatus | None) -> NodeReport:
    return NodeReport(name=name, installs=installs)


def _plan(*containers: str, refused: str = "") -> InstallPlan:
    files = install_files("shop", "rec", {f"{c}.json": PROFILE for c in containers})
    return InstallPlan(files, frozenset(files) if not refused else frozenset(), refused)


def _installed(status: ContainerTraceStatus) -> tuple[str, str, str]:
    cond = next(c for c in status.conditions if c.type == "ProfileInstalled")
    return str(cond.status), cond.reason, cond.message


def test_status_lists_the_nodes_that_hold_the_current_version() -> None:
    plan = _plan("web")
    have = SeccompInstallStatus(directory="/var/lib/kubelet/seccomp",
                                installed=[f"uid-1:{plan.version}"])
    old = SeccompInstallStatus(directory="/var/lib/kubelet/seccomp",
                               installed=[f"uid-1:{'0' * 16}"])
    reports = {"n1": _report("n1", have), "n2": _report("n2", old)}
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1)  # fmt: skip
    profile = status.seccomp_profile
    assert profile is not None and profile.installed is not None
    assert profile.containers[0].localhost_profile == "podtrace/shop-rec-web.json"
    assert (profile.installed.nodes, profile.installed.installed_nodes,
            profile.installed.total_nodes) == (["n1"], 1, 2)
    assert [(m.node, m.message) for m in profile.installed.missing] == [("n2", "not written yet")]
    assert _installed(status)[:2] == ("False", "Installing")

    reports["n2"] = _report("n2", have)
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1)  # fmt: skip
    state, reason, message = _installed(status)
    assert (state, reason) == ("True", "Installed")
    assert "on 2 of 2 nodes" in message and "podtrace/shop-rec-web.json" in message


def test_an_agent_that_cannot_install_is_named_with_its_reason() -> None:
    plan = _plan("web")
    reports = {
        "n1": _report("n1", SeccompInstallStatus(directory="", message="runs without it")),
        "n2": _report("n2", SeccompInstallStatus(
            directory="/d", failed=[InstallFailure(uid="uid-1", message="disk full")])),
        "n3": _report("n3", None),
    }
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1)  # fmt: skip
    assert status.seccomp_profile and status.seccomp_profile.installed
    missing = {m.node: m.message for m in status.seccomp_profile.installed.missing}
    assert missing["n1"] == "runs without it" and missing["n2"] == "disk full"
    assert "reports no installed profiles" in missing["n3"]
    assert _installed(status)[1] == "InstallFailed"


def test_a_refused_name_is_not_offered_to_pods() -> None:
    plan = _plan("web", refused="NameTaken: shop-rec-web.json is held by trace shop-rec/web")
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports={}, now=NOW, generation=1)  # fmt: skip
    assert status.seccomp_profile is not None
    assert status.seccomp_profile.containers[0].localhost_profile is None
    state, reason, message = _installed(status)
    assert (state, reason) == ("False", "NameTaken") and "trace shop-rec/web" in message


def test_no_install_asked_removes_the_install_part() -> None:
    plan = _plan("web")
    status = with_install(_status("web"), plan=plan, uid="u", namespace="shop", trace="rec",
                          reports={}, now=NOW, generation=1)  # fmt: skip
    status = with_install(status, plan=None, uid="u", namespace="shop", trace="rec",
                          reports={}, now=NOW, generation=2)  # fmt: skip
    assert status.seccomp_profile is not None and status.seccomp_profile.installed is None
    assert status.seccomp_profile.containers[0].localhost_profile is None
    assert not [c for c in status.conditions if c.type == "ProfileInstalled"]


def test_a_config_map_that_cannot_be_written_says_why() -> None:
    status = with_install(_status("web"), plan=_plan("web"), uid="u", namespace="shop",
                          trace="rec", reports={}, now=NOW, generation=1,
                          publish_error="ConfigMap podtrace-system/x not written: 404")
    assert _installed(status) == ("False", "InstallFailed",
                                  "ConfigMap podtrace-system/x not written: 404")


# -- the agent's side ------------------------------------------------------------------------

def _config_map(name: str, uid: str, trace: str, data: dict[str, str]) -> dict:
    return {"metadata": {"name": name, "annotations": {"podtrace.io/trace": trace,
                                                       "podtrace.io/trace-uid": uid}},
            "data": data}  # fmt: skip


def test_the_agent_writes_what_is_published_and_reports_the_operators_digest(
        tmp_path: Path) -> None:  # fmt: skip
    plan = _plan("web", "db")
    maps = [_config_map("seccomp.shop.rec", "uid-1", "shop/rec", plan.published)]
    directory = SeccompDir(tmp_path)
    status = directory.sync(wanted(maps))
    assert status.installed == [f"uid-1:{plan.version}"] and not status.failed
    on_disk = {p.name: p.read_text() for p in (tmp_path / "podtrace").iterdir()}
    assert on_disk == plan.published
    assert all(oct(p.stat().st_mode & 0o777) == "0o644"
               for p in (tmp_path / "podtrace").iterdir())  # fmt: skip
    # A new version replaces the file; a file no ConfigMap asks for goes.
    newer = {"shop-rec-web.json": PROFILE.replace("ERRNO", "KILL_PROCESS")}
    (tmp_path / "podtrace" / "left-by-a-trace-deleted-meanwhile.json").write_text("{}")
    status = directory.sync(wanted([_config_map("seccomp.shop.rec", "uid-1", "shop/rec",
                                                newer)]))  # fmt: skip
    assert status.installed == [f"uid-1:{digest(newer)}"]
    assert {p.name: p.read_text() for p in (tmp_path / "podtrace").iterdir()} == newer
    # No ConfigMap: nothing installed, nothing left.
    assert directory.sync([]).installed == []
    assert list((tmp_path / "podtrace").iterdir()) == []


def test_a_restarted_agent_does_not_rewrite_what_is_there(tmp_path: Path) -> None:
    plan = _plan("web")
    maps = [_config_map("seccomp.shop.rec", "uid-1", "shop/rec", plan.published)]
    SeccompDir(tmp_path).sync(wanted(maps))
    path = tmp_path / "podtrace" / "shop-rec-web.json"
    before = path.stat().st_ino
    status = SeccompDir(tmp_path).sync(wanted(maps))
    assert path.stat().st_ino == before and status.installed == [f"uid-1:{plan.version}"]


def test_nothing_a_config_map_holds_is_written_outside_the_directory(tmp_path: Path) -> None:
    bad = {"../escape.json": PROFILE, "x.json": "not json", "y.json": "[1]",
           "ok.json": PROFILE}  # fmt: skip
    traces = wanted([_config_map("seccomp.a.t", "uid-1", "a/t", bad)])
    assert list(traces[0].files) == ["ok.json"]
    status = SeccompDir(tmp_path / "seccomp").sync(traces)
    assert status.installed == [] and status.failed[0].uid == "uid-1"
    assert "not a profile file name" in status.failed[0].message
    assert sorted(p.name for p in (tmp_path / "seccomp" / "podtrace").iterdir()) == ["ok.json"]
    assert not (tmp_path / "seccomp" / "escape.json").exists()


def test_one_file_name_in_two_config_maps_is_written_once(tmp_path: Path) -> None:
    one = _config_map("seccomp.a.t", "u1", "a/t", {"a-t-c.json": PROFILE})
    two = _config_map("seccomp.b.t", "u2", "b/t", {"a-t-c.json": "{\"defaultAction\": \"X\"}"})
    status = SeccompDir(tmp_path).sync(wanted([two, one]))
    assert (tmp_path / "podtrace" / "a-t-c.json").read_text() == PROFILE
    assert status.installed == [f"u1:{digest({'a-t-c.json': PROFILE})}"]
    assert [f.uid for f in status.failed] == ["u2"]


def test_a_directory_it_cannot_write_is_reported(tmp_path: Path) -> None:
    (tmp_path / "seccomp").write_text("a file where the kubelet's directory should be")
    status = SeccompDir(tmp_path / "seccomp").sync(
        [TraceProfiles("u1", "a/t", {"a-t-c.json": PROFILE})])
    assert status.installed == [] and status.failed[0].uid == "u1"
    assert "Not a directory" in status.message
