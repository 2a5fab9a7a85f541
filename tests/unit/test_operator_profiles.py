"""Seccomp profiles per container name, merged over replicas (profiles.py) and how a
ContainerTrace's status and ConfigMap show them (trace_status.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from podtrace_api.conditions import get_condition
from podtrace_api.containertrace import ContainerTraceSpec
from podtrace_api.nodetracer import TargetProfile
from podtrace_api.syscalls import name_of, number_of
from podtrace_api.syscallset import encode
from podtrace_operator.profiles import ProfileBook
from podtrace_operator.tallies import Tally
from podtrace_operator.trace_status import TraceInput, trace_status

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CT = "ContainerTrace/shop/rec"
OTHER = "TracingPolicy/shells"
SPEC = {"selector": {}, "seccompProfile": {"defaultAction": "SCMP_ACT_ERRNO"}}


def row(uid: str, container: str, names: list[str], start_seen: bool = True) -> TargetProfile:
    return TargetProfile(pod_uid=uid, container=container,
                         syscall_set=encode(number_of(n) for n in names), start_seen=start_seen)


def spec_target(uid: str, container: str, *sources: str) -> dict[str, Any]:
    return {"podUid": uid, "container": container, "sources": list(sources)}


def test_one_profile_per_container_name_with_the_coverage_of_its_replicas() -> None:
    book = ProfileBook()
    profile_sources = frozenset({CT})
    book.observe("n1", [row("u1", "web", ["read", "write", "futex"]),
                        row("u1", "sidecar", ["read", "nanosleep"]),
                        row("u9", "web", ["mount"])],  # a target of another source only
                 [spec_target("u1", "web", CT, OTHER), spec_target("u1", "sidecar", CT),
                  spec_target("u9", "web", OTHER)], name_of, 0, profile_sources)  # fmt: skip
    book.observe("n2", [row("u2", "web", ["read", "write", "unshare"])],
                 [spec_target("u2", "web", CT)], name_of, 0, profile_sources)
    got = book.containers(CT)
    assert list(got) == ["sidecar", "web"]
    web = got["web"]
    assert (web.replicas, web.start_seen) == (2, 2)
    assert dict(web.coverage) == {"read": 2, "write": 2, "futex": 1, "unshare": 1}
    assert got["sidecar"].names() == ["nanosleep", "read"]
    assert book.containers(OTHER) == {}  # a source that builds no profile keeps nothing

    # u2's pod ends (its row and target leave n2's report): it stays in the profile; a
    # later report of u1 adds to what u1 did (a union over time).
    book.observe("n2", [], [], name_of, 0, profile_sources)
    book.observe("n1", [row("u1", "web", ["read", "epoll_wait"])],
                 [spec_target("u1", "web", CT)], name_of, 0, profile_sources)
    web = book.containers(CT)["web"]
    assert web.replicas == 2 and web.coverage["epoll_wait"] == 1 and web.coverage["futex"] == 1
    book.forget(CT)
    assert book.containers(CT) == {}


def trace_input(old=None) -> TraceInput:
    return TraceInput(name="rec", namespace="shop", generation=1, created=T0,
                      spec=ContainerTraceSpec.model_validate(SPEC), problems=(), old=old)


def status_of(book: ProfileBook, old=None):
    return trace_status(trace_input(old), source_id=CT, targets=[], reports={}, tally=Tally(),
                        arches=["amd64"], now=T0, pending_timeout=timedelta(minutes=5), top_n=2,
                        profiles=book.containers(CT), profiles_omitted=book.omitted_on(CT))


def test_status_lists_each_container_s_syscalls_and_the_configmap_one_key_each() -> None:
    book = ProfileBook()
    targets = [spec_target("u1", "web", CT), spec_target("u2", "web", CT),
               spec_target("u1", "log", CT)]
    book.observe("n1", [row("u1", "web", ["read", "write"]), row("u2", "web", ["read"]),
                        row("u1", "log", ["write"]), row("u3", "web", [])],
                 targets, name_of, 0, frozenset({CT}))  # fmt: skip
    out = status_of(book)
    profile = out.status.seccomp_profile
    assert profile is not None and profile.config_map == "rec-seccomp"
    assert profile.syscalls == 2  # read and write, all containers together
    web = next(c for c in profile.containers if c.container == "web")
    assert (web.key, web.replicas, web.start_seen) == ("web.json", 2, 2)
    assert [(s.name, s.replicas) for s in web.syscalls] == [("read", 2), ("write", 1)]
    assert out.profile_files is not None and set(out.profile_files) == {"log.json", "web.json"}
    allowed = json.loads(out.profile_files["web.json"])["syscalls"]
    assert allowed == [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]
    ok = get_condition(out.status.conditions, "ProfileComplete")
    assert ok is not None and ok.status == "True"
    # Nothing recorded yet: no profile (an allow-nothing profile would break the pod).
    assert status_of(ProfileBook()).status.seccomp_profile is None


def test_replicas_attached_while_running_or_left_out_make_the_profile_incomplete() -> None:
    book = ProfileBook()
    book.observe("n1", [row("u1", "web", ["read"]), row("u2", "web", ["read"], False)],
                 [spec_target("u1", "web", CT), spec_target("u2", "web", CT)], name_of, 0,
                 frozenset({CT}))  # fmt: skip
    ok = get_condition(status_of(book).status.conditions, "ProfileComplete")
    assert (ok.status, ok.reason) == ("False", "StartNotSeen")
    assert "web (1 of 2 replicas)" in ok.message and "start-up" in ok.message
    book.observe("n2", [], [spec_target("u7", "web", CT)], name_of, 5, frozenset({CT}))
    ok = get_condition(status_of(book).status.conditions, "ProfileComplete")
    assert (ok.status, ok.reason) == ("False", "ProfilesOmitted") and "n2 (5)" in ok.message


def test_a_restarted_operator_carries_what_the_last_status_counted() -> None:
    book = ProfileBook()
    book.observe("n1", [row("u1", "web", ["read", "write"]), row("u2", "web", ["read", "brk"])],
                 [spec_target("u1", "web", CT), spec_target("u2", "web", CT)], name_of, 0,
                 frozenset({CT}))  # fmt: skip
    stored = status_of(book).status
    # A new process: only u1 is reported again (u2's pod ended meanwhile).
    fresh = ProfileBook()
    fresh.observe("n1", [row("u1", "web", ["read", "write"])], [spec_target("u1", "web", CT)],
                  name_of, 0, frozenset({CT}))
    fresh.seed(CT, stored.seccomp_profile)
    fresh.seed(CT, None)  # once per process
    web = fresh.containers(CT)["web"]
    assert web.replicas == 2 and dict(web.coverage) == {"read": 2, "write": 1, "brk": 1}
