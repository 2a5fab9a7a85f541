"""The agent's results: counts kept once per container, windows of a source on a
container from its baseline, and the bounded report of a source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from podtrace_agent.cluster.results import (
    Baseline,
    ContainerCounts,
    Observed,
    SourceTotals,
    Window,
    source_result,
)
from podtrace_api.budget import TOP_EXECS, TOP_SYSCALLS
from podtrace_api.nodetracer import TraceSource
from podtrace_api.syscalls import name_of, number_of
from podtrace_api.syscallset import decode

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READ, WRITE = number_of("read"), number_of("write")


def _source(sid: str, **spec: object) -> TraceSource:
    kind, _, rest = sid.partition("/")
    ns, _, name = rest.rpartition("/")
    return TraceSource.model_validate(
        {"id": sid, "kind": kind, "name": name, **({"namespace": ns} if ns else {}), **spec}
    )


def test_a_container_s_counts_only_grow_over_restarts_and_retraces() -> None:
    counts = ContainerCounts()
    counts.update(100, {READ: 5, WRITE: 2}, lost=3)
    counts.update(101, {READ: 1})  # the container restarted: a new cgroup
    assert counts.syscalls() == {READ: 6, WRITE: 2} and counts.lost() == 3
    counts.update(100, {READ: 2})  # cgroup 100 untraced and traced again: counts from zero
    assert counts.syscalls() == {READ: 8, WRITE: 2}
    assert counts.syscalls(without=100) == {READ: 6, WRITE: 2}
    counts.retire(101)
    assert counts.syscalls() == {READ: 8, WRITE: 2}
    for cgroup in range(20):  # many restarts fold into the carried totals
        counts.update(cgroup, {WRITE: 1})
    assert counts.syscalls()[WRITE] == 22


def test_counts_grow_by_what_is_new_also_when_a_cgroup_counts_from_zero_again() -> None:
    counts = ContainerCounts()
    assert counts.update(7, {READ: 10}, lost=1) == ({READ: 10}, 1)
    assert counts.update(7, {READ: 14, WRITE: 1}, lost=4) == ({READ: 4, WRITE: 1}, 3)
    assert counts.update(7, {READ: 2}, lost=0) == ({READ: 2}, 0)  # retraced: from zero
    assert counts.syscalls() == {READ: 16, WRITE: 1} and counts.lost() == 4


def test_a_source_counts_its_windows_from_their_baselines() -> None:
    counts = ContainerCounts()
    counts.update(7, {READ: 10}, lost=1)
    totals = SourceTotals(_source("ContainerTrace/ns/rec"), T0)
    fresh = Window.at("app", Baseline.of(counts, without=7))  # from the cgroup's start
    totals.opened(fresh, counts)
    assert totals.seen.syscalls == {READ: 10} and totals.seen.lost == 1
    totals.confirm(fresh)
    totals.add_exec(fresh, "/bin/sh", T0)
    later = Window.at("side", None)  # counts from the next counts read
    assert totals.seen.execs == {"/bin/sh": 1} and not later.counting
    totals.grew({READ: 5}, 2)  # what the container's counts grew by, for a counting window
    assert totals.seen.syscalls == {READ: 15} and totals.seen.lost == 3


def test_an_unconfirmed_window_takes_back_what_it_added() -> None:
    counts = ContainerCounts()
    counts.update(7, {READ: 10})
    totals = SourceTotals(_source("ContainerTrace/ns/rec"), T0)
    window = Window.at("app", Baseline.of(counts, without=7))
    totals.opened(window, counts)
    totals.add_exec(window, "/bin/sh", T0)  # replayed before the backend said yes
    assert totals.seen.execs == {} and window.pending.execs == {"/bin/sh": 1}
    totals.drop(window, counts)  # the backend refused the source
    assert totals.seen.syscalls == {} and totals.seen.execs == {}


def test_the_report_follows_what_the_source_observes() -> None:
    seen = Observed()
    seen.syscalls.update({READ: 6, WRITE: 2})
    seen.add_exec("/bin/sh", 2, (T0, "app"))
    seen.add_exec("/bin/true", 1, (T0 + timedelta(seconds=1), "side"))
    seen.rules["shell"] = 2
    everything = source_result(_source("ContainerTrace/ns/rec"), T0, seen, name_of)
    assert [(s.name, s.count) for s in everything.syscalls] == [("read", 6), ("write", 2)]
    assert everything.syscalls_total == 8 and decode(everything.syscall_set) == {READ, WRITE}
    assert [(e.filename, e.count, e.container) for e in everything.execs] == [
        ("/bin/sh", 2, "app"), ("/bin/true", 1, "side")]
    assert [(m.rule, m.count) for m in everything.rule_matches] == [("shell", 2)]

    named = _source("TracingPolicy/p", observe={"syscalls": {"mode": "Named", "names": ["write"]},
                                                "processes": {"exec": False}})
    result = source_result(named, T0, seen, name_of)
    assert [(s.name, s.count) for s in result.syscalls] == [("write", 2)]
    assert decode(result.syscall_set) == {WRITE}
    assert result.execs == [] and result.execs_total == 0


def test_the_report_is_bounded_and_says_what_it_left_out() -> None:
    seen = Observed()
    seen.syscalls.update({n: 1000 - n for n in range(300)})
    for i in range(200):
        seen.add_exec(f"/bin/p{i:03}", 1 + i % 3, (T0, "app"))
    result = source_result(_source("ContainerTrace/ns/rec"), T0, seen, name_of)
    assert len(result.syscalls) == TOP_SYSCALLS and result.syscalls_omitted == 300 - TOP_SYSCALLS
    assert result.syscalls[0].name == "read"  # the most frequent first
    assert len(decode(result.syscall_set)) == 300  # every one of them for a profile
    assert len(result.execs) == TOP_EXECS
    assert result.execs_omitted == result.execs_total - 3 * TOP_EXECS  # execs not listed
    assert result.execs_total == sum(1 + i % 3 for i in range(200))
    assert {e.count for e in result.execs} == {3}


def test_filenames_are_stored_plain_and_within_their_bound() -> None:
    seen = Observed()
    seen.add_exec("/usr/bin/caf\u00e9 <x>", 1, (T0, "app"))
    seen.add_exec("/" + "\u00e9" * 255, 1, (T0, "app"))
    result = source_result(_source("ContainerTrace/ns/rec"), T0, seen, name_of)
    long, short = sorted((e.filename for e in result.execs), key=len, reverse=True)
    assert short == "/usr/bin/caf%C3%A9 %3Cx%3E"
    assert long.startswith("/%C3%A9%C3%A9") and long.endswith("...") and len(long) <= 255
