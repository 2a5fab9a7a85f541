"""The ledger: what a node stops reporting stays counted, an agent that starts
counting from zero again (a new `since`) does not lose what it counted before,
the syscall set of each node is read in its own architecture, and a restarted
operator picks up the totals it wrote last."""

from __future__ import annotations

from functools import partial
from typing import Any

from podtrace_api.syscalls import name_of, number_of
from podtrace_api.syscallset import encode
from podtrace_operator.reports import NodeReport, node_report
from podtrace_operator.tallies import Ledger, Tally

SRC = "TracingPolicy/p"
CT = "ContainerTrace/ns/t"
T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"


def report(node: str, **results: dict[str, Any]) -> NodeReport:
    """A node reporting `results` per source id (spelled with __ for /)."""
    return node_report({
        "metadata": {"name": node, "generation": 1},
        "status": {"sources": [
            {"source": sid.replace("__", "/"), "results": result}
            for sid, result in results.items()
        ]},
    })  # fmt: skip


def matches(n: int, since: str = T1) -> dict[str, Any]:
    return {"since": since, "ruleMatches": [{"rule": "shell", "count": n}]}


def calls(since: str = T1, lost: int = 0, **counts: int) -> dict[str, Any]:
    numbers = [number_of(n) for n in counts]
    return {"since": since, "syscalls": [{"name": n, "count": c} for n, c in counts.items()],
            "syscallsTotal": sum(counts.values()), "syscallSet": encode(numbers),
            "execs": [{"filename": "/bin/sh", "count": 1}], "execsTotal": 1,
            "eventsLost": lost}  # fmt: skip


P, C = SRC.replace("/", "__"), CT.replace("/", "__")


def test_what_a_node_stops_reporting_stays() -> None:
    ledger = Ledger()
    ledger.observe("n1", report("n1", **{P: matches(3)}))
    ledger.observe("n1", report("n1", **{P: matches(5)}))  # grows on the same node
    assert ledger.total(SRC).rules == {"shell": 5}
    ledger.observe("n1", report("n1"))  # the policy left the node (or its retention ended)
    assert ledger.total(SRC).rules == {"shell": 5}
    ledger.observe("n1", report("n1", **{P: matches(1, since=T2)}))  # back, counted anew
    ledger.observe("n1", None)  # the whole NodeTracer went
    assert ledger.total(SRC).rules == {"shell": 6}


def test_an_agent_that_counts_from_zero_again_loses_nothing() -> None:
    ledger = Ledger()
    ledger.observe("n1", report("n1", **{C: calls(read=10, write=2, lost=4)}))
    ledger.observe("n1", report("n1", **{C: calls(since=T2, read=12)}))  # agent restarted
    total = ledger.total(CT)
    assert total.syscalls == {"read": 22, "write": 2} and total.syscalls_total == 24
    assert total.execs_total == 2 and total.execs["/bin/sh"].count == 2
    assert total.names == {"read", "write"} and total.lost == 4


def test_counters_going_back_with_the_same_since_start_over_too() -> None:
    ledger = Ledger()
    ledger.observe("n1", report("n1", **{C: calls(read=10)}))
    ledger.observe("n1", report("n1", **{C: calls(read=3)}))
    assert ledger.total(CT).syscalls == {"read": 13}


def test_nodes_add_up_in_their_own_architecture_and_forget_drops_a_source() -> None:
    ledger = Ledger()
    ledger.observe("n1", report("n1", **{C: calls(read=1)}))
    arm = report("n2", **{C: {"since": T1, "syscallsTotal": 5, "syscallSet": encode([0])}})
    ledger.observe("n2", arm, partial(name_of, arch="arm64"))
    total = ledger.total(CT)
    assert total.names == {"read", "io_setup"} and total.syscalls_total == 6
    ledger.forget(CT)
    assert ledger.total(CT).names == set()


def test_seeding_after_a_restart_carries_what_is_no_longer_live() -> None:
    ledger = Ledger()
    ledger.observe("n1", report("n1", **{C: calls(read=4)}))
    stored = Tally(syscalls={"read": 10, "open": 3}, syscalls_total=13, names={"read", "open"})
    ledger.seed(CT, stored)
    total = ledger.total(CT)
    assert total.syscalls == {"read": 10, "open": 3} and total.syscalls_total == 13
    ledger.seed(CT, Tally(syscalls={"read": 100}))  # once per source and process
    assert ledger.total(CT).syscalls["read"] == 10
