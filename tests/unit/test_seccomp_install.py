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
from podtrace_agent.cluster.seccompdir import SeccompDir, wanted
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


@given(DNS_NAME, DNS_LABEL)
def test_every_file_name_is_one_an_agent_writes(trace: str, container: str) -> None:
    name = file_name(trace, container)
    assert valid_file_name(name), name
    assert len(name) <= 253


def test_another_namespace_can_never_make_a_tenant_s_path() -> None:
    # With dashes, namespace a + trace b-c and namespace a-b + trace c would both make
    # a-b-c-web.json: the namespace is a directory instead.
    claims = Claims()
    assert claims.claim(Holder("u1", "a/b-c"), [file_name("b-c", "web")]) == (
        {"b-c-web.json"}, "")
    assert claims.claim(Holder("u2", "a-b/c"), [file_name("c", "web")]) == ({"c-web.json"}, "")


def test_a_path_belongs_to_the_first_trace_of_its_namespace_that_claims_it() -> None:
    claims = Claims()
    # In one namespace, trace a-b + container c and trace a + container b-c meet.
    first, second = Holder("u1", "shop/a-b"), Holder("u2", "shop/a")
    name = file_name("a-b", "c")
    assert name == file_name("a", "b-c")
    assert claims.claim(first, [name]) == ({name}, "")
    held, why = claims.claim(second, [name, "a-d.json"])
    assert held == {"a-d.json"}
    assert why.startswith("NameTaken: shop/a-b-c.json is held by trace shop/a-b")
    assert claims.claim(first, [name]) == ({name}, "")  # its own stays its own
    claims.release("u1")
    assert claims.claim(second, [name, "a-d.json"]) == ({name, "a-d.json"}, "")


def test_a_trace_lets_go_of_names_it_no_longer_asks_for() -> None:
    claims = Claims()
    claims.claim(Holder("u1", "a/t"), ["t-x.json", "t-y.json"])
    claims.claim(Holder("u1", "a/t"), ["t-x.json"])
    assert claims.claim(Holder("u2", "a/t2"), ["t-y.json"]) == ({"t-y.json"}, "")


def test_no_more_traces_install_than_every_node_can_report() -> None:
    claims = Claims(limit=2)
    for uid in ("u1", "u2"):
        assert claims.claim(Holder(uid, f"n{uid}/t"), ["t-c.json"])[1] == ""
    held, why = claims.claim(Holder("u3", "n3/t"), ["t-c.json"])
    assert held == set() and why.startswith("TooManyInstalled: 2 traces")
    # one already holding names may change them
    assert claims.claim(Holder("u1", "nu1/t"), ["t-d.json"]) == ({"t-d.json"}, "")


def test_one_namespace_cannot_take_every_slot() -> None:
    claims = Claims(limit=10, per_namespace=2)
    for i in range(2):
        assert claims.claim(Holder(f"u{i}", f"greedy/t{i}"), [f"t{i}-c.json"])[1] == ""
    held, why = claims.claim(Holder("u9", "greedy/t9"), ["t9-c.json"])
    assert held == set() and why.startswith("TooManyInstalled: 2 traces of namespace greedy")
    assert claims.claim(Holder("u8", "other/t"), ["t-c.json"]) == ({"t-c.json"}, "")


def _status(*containers: str) -> ContainerTraceStatus:
    return ContainerTraceStatus(seccomp_profile=SeccompProfileResult(
        config_map="rec-seccomp", syscalls=1,
        containers=[ContainerProfile(container=c, key=f"{c}.json", replicas=1,
                                     syscalls=[SyscallCoverage(name="read", replicas=1)])
                    for c in containers]))  # fmt: skip


def _report(name: str, installs: SeccompInstallStatus | None) -> NodeReport:
    return NodeReport(name=name, installs=installs, heartbeat=NOW)


def _plan(*containers: str, refused: str = "") -> InstallPlan:
    files = install_files("rec", {f"{c}.json": PROFILE for c in containers})
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
    none = SeccompInstallStatus(directory="/var/lib/kubelet/seccomp")
    reports = {"n1": _report("n1", have), "n2": _report("n2", none)}
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1)  # fmt: skip
    profile = status.seccomp_profile
    assert profile is not None and profile.installed is not None
    assert profile.containers[0].localhost_profile == "podtrace/shop/rec-web.json"
    assert (profile.installed.nodes, profile.installed.installed_nodes,
            profile.installed.total_nodes) == (["n1"], 1, 2)
    assert [(m.node, m.message) for m in profile.installed.missing] == [("n2", "not written yet")]
    assert _installed(status)[:2] == ("False", "Installing")

    # A node with an older version holds the profile: the condition does not flap while
    # the trace records more, and says the newest version is on the way.
    reports["n2"] = _report("n2", old)
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1)  # fmt: skip
    state, reason, message = _installed(status)
    assert (state, reason) == ("True", "Installed") and "newest version on 1" in message
    assert status.seccomp_profile and status.seccomp_profile.installed
    assert status.seccomp_profile.installed.nodes == ["n1"]

    reports["n2"] = _report("n2", have)
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1)  # fmt: skip
    state, reason, message = _installed(status)
    assert (state, reason) == ("True", "Installed")
    assert "on 2 of 2 nodes," in message and "podtrace/shop/rec-web.json" in message


def test_an_agent_that_cannot_install_is_named_with_its_reason() -> None:
    plan = _plan("web")
    reports = {
        "n1": _report("n1", SeccompInstallStatus(directory="", message="runs without it")),
        "n2": _report("n2", SeccompInstallStatus(
            directory="/d", failed=[InstallFailure(uid="uid-1", message="disk full")])),
        "n3": _report("n3", None),
        "n4": NodeReport(name="n4"),  # a new node whose agent has not reported yet
        "n5": _report("n5", SeccompInstallStatus(directory="/d", installed=[
            f"uid-1:{plan.version}"])),
    }
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports=reports, now=NOW, generation=1,
                          silent={"n5"})  # fmt: skip
    assert status.seccomp_profile and status.seccomp_profile.installed
    missing = {m.node: m.message for m in status.seccomp_profile.installed.missing}
    assert missing["n1"] == "runs without it" and missing["n2"] == "disk full"
    assert "reports no installed profiles" in missing["n3"]
    assert missing["n4"] == "no report from its agent yet"
    assert missing["n5"].startswith("its agent sends no heartbeat")
    assert _installed(status)[1] == "InstallFailed"
    # a node whose agent has not reported yet alone: waiting, no failure
    only_new = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                            trace="rec", reports={"n4": reports["n4"]}, now=NOW,
                            generation=1)  # fmt: skip
    assert _installed(only_new)[1] == "Installing"


def test_a_refused_name_is_not_offered_to_pods() -> None:
    plan = _plan("web", refused="NameTaken: shop/rec-web.json is held by trace shop/rec-w")
    status = with_install(_status("web"), plan=plan, uid="uid-1", namespace="shop",
                          trace="rec", reports={}, now=NOW, generation=1)  # fmt: skip
    assert status.seccomp_profile is not None
    assert status.seccomp_profile.containers[0].localhost_profile is None
    state, reason, message = _installed(status)
    assert (state, reason) == ("False", "NameTaken") and "trace shop/rec-w" in message


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


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_the_agent_writes_what_is_published_and_reports_the_operators_digest(
        tmp_path: Path) -> None:  # fmt: skip
    plan = _plan("web", "db")
    maps = [_config_map("seccomp.shop.rec", "uid-1", "shop/rec", plan.published)]
    directory = SeccompDir(tmp_path)
    status = directory.sync(wanted(maps))
    assert status.installed == [f"uid-1:{plan.version}"] and not status.failed
    root = tmp_path / "podtrace"
    assert _tree(root) == {f"shop/{k}": v for k, v in plan.published.items()}
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in (root / "shop").iterdir())
    # A new version replaces the file; what no ConfigMap asks for goes.
    newer = {"rec-web.json": PROFILE.replace("ERRNO", "KILL_PROCESS")}
    (root / "shop" / "left-by-a-trace-deleted-meanwhile.json").write_text("{}")
    (root / "gone-ns").mkdir()
    (root / "gone-ns" / "t-c.json").write_text("{}")
    (root / "a-stray-file").write_text("x")
    status = directory.sync(wanted([_config_map("seccomp.shop.rec", "uid-1", "shop/rec",
                                                newer)]))  # fmt: skip
    assert status.installed == [f"uid-1:{digest(newer)}"]
    assert _tree(root) == {"shop/rec-web.json": newer["rec-web.json"]}
    assert sorted(p.name for p in root.iterdir()) == ["shop"]
    # No ConfigMap: nothing installed, nothing left.
    assert directory.sync([]).installed == []
    assert list(root.iterdir()) == []


def test_a_restarted_agent_does_not_rewrite_what_is_there(tmp_path: Path) -> None:
    plan = _plan("web")
    maps = [_config_map("seccomp.shop.rec", "uid-1", "shop/rec", plan.published)]
    SeccompDir(tmp_path).sync(wanted(maps))
    path = tmp_path / "podtrace" / "shop" / "rec-web.json"
    before = path.stat().st_ino
    status = SeccompDir(tmp_path).sync(wanted(maps))
    assert path.stat().st_ino == before and status.installed == [f"uid-1:{plan.version}"]


def test_nothing_a_config_map_holds_is_written_outside_the_directory(tmp_path: Path) -> None:
    bad = {"../escape.json": PROFILE, "x.json": "not json", "y.json": "[1]",
           "ok.json": PROFILE}  # fmt: skip
    traces = wanted([_config_map("seccomp.a.t", "uid-1", "a/t", bad),
                     _config_map("seccomp.evil", "uid-2", "../up/t", {"ok.json": PROFILE}),
                     _config_map("seccomp.long", "u" * 40, "a/t", {"ok.json": PROFILE})])
    assert [list(t.files) for t in traces] == [["a/ok.json"]]  # the other two skipped
    status = SeccompDir(tmp_path / "seccomp").sync(traces)
    assert status.installed == [] and status.failed[0].uid == "uid-1"
    assert "not a profile file name" in status.failed[0].message
    assert _tree(tmp_path / "seccomp") == {"podtrace/a/ok.json": PROFILE}


def test_a_file_that_is_not_text_is_replaced_not_a_crash(tmp_path: Path) -> None:
    plan = _plan("web")
    (tmp_path / "podtrace" / "shop").mkdir(parents=True)
    (tmp_path / "podtrace" / "shop" / "rec-web.json").write_bytes(b"\xff\xfe")
    status = SeccompDir(tmp_path).sync(wanted([_config_map("seccomp.shop.rec", "uid-1",
                                                           "shop/rec", plan.published)]))
    assert status.installed == [f"uid-1:{plan.version}"]
    assert _tree(tmp_path / "podtrace") == {f"shop/{k}": v for k, v in plan.published.items()}


def test_one_path_in_two_config_maps_is_written_once(tmp_path: Path) -> None:
    one = _config_map("seccomp.a.t", "u1", "a/t", {"t-c.json": PROFILE})
    two = _config_map("seccomp.a.t2", "u2", "a/t2", {"t-c.json": "{\"defaultAction\": \"X\"}"})
    status = SeccompDir(tmp_path).sync(wanted([two, one]))
    assert (tmp_path / "podtrace" / "a" / "t-c.json").read_text() == PROFILE
    assert status.installed == [f"u1:{digest({'t-c.json': PROFILE})}"]
    assert [f.uid for f in status.failed] == ["u2"]


def test_a_directory_it_cannot_write_is_reported(tmp_path: Path) -> None:
    (tmp_path / "seccomp").write_text("a file where the kubelet's directory should be")
    status = SeccompDir(tmp_path / "seccomp").sync(
        wanted([_config_map("seccomp.a.t", "u1", "a/t", {"t-c.json": PROFILE})]))
    assert status.installed == [] and status.failed[0].uid == "u1"
    assert "Not a directory" in status.message
