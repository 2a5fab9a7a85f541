"""The ledger: counts of containers that are gone stay counted, an agent that
starts counting from zero again does not lose what it counted before, and a
restarted operator picks up the totals it wrote last."""

from __future__ import annotations

from typing import Any

from podtrace_operator.reports import NodeReport, node_report
from podtrace_operator.tallies import Ledger, Tally

SRC = "TracingPolicy/p"
CT = "ContainerTrace/ns/t"


def report(node: str, *targets: tuple[str, dict[str, Any]]) -> NodeReport:
    return node_report({
        "metadata": {"name": node, "generation": 1},
        "status": {"targets": [
            {"podUid": uid, "container": "app", "state": "Tracing", "results": [result]}
            for uid, result in targets
        ]},
    })  # fmt: skip


def matches(n: int) -> dict[str, Any]:
    return {"source": SRC, "ruleMatches": [{"rule": "shell", "count": n}]}


def calls(**counts: int) -> dict[str, Any]:
    return {"source": CT, "syscalls": counts, "syscallsTotal": sum(counts.values()),
            "execs": [{"filename": "/bin/sh", "count": 1}], "execsTotal": 1}  # fmt: skip


def test_counts_of_targets_that_left_stay() -> None:
    ledger = Ledger()
    first = report("n1", ("u1", matches(3)), ("u2", matches(2)))
    ledger.observe("n1", None, first)
    second = report("n1", ("u2", matches(5)))  # u1's pod finished: its target is gone
    ledger.observe("n1", first, second)
    assert ledger.total(SRC).rules == {"shell": 8}
    ledger.observe("n1", second, None)  # the whole NodeTracer went
    assert ledger.total(SRC).rules == {"shell": 8}


def test_an_agent_that_counts_from_zero_again_loses_nothing() -> None:
    ledger = Ledger()
    before = report("n1", ("u1", calls(read=10, write=2)))
    ledger.observe("n1", None, before)
    after = report("n1", ("u1", calls(read=1)))  # agent restarted
    ledger.observe("n1", before, after)
    total = ledger.total(CT)
    assert total.syscalls == {"read": 11, "write": 2} and total.syscalls_total == 13
    assert total.execs_total == 2 and total.execs["/bin/sh"].count == 2
    assert total.names == {"read", "write"}


def test_nodes_add_up_and_forget_drops_a_source() -> None:
    ledger = Ledger()
    ledger.observe("n1", None, report("n1", ("u1", matches(1))))
    ledger.observe("n2", None, report("n2", ("u2", matches(2))))
    assert ledger.total(SRC).rules == {"shell": 3}
    ledger.forget(SRC)
    assert ledger.total(SRC).rules == {}


def test_seeding_after_a_restart_carries_what_is_no_longer_live() -> None:
    ledger = Ledger()
    ledger.observe("n1", None, report("n1", ("u2", calls(read=4))))
    stored = Tally(syscalls={"read": 10, "open": 3}, syscalls_total=13, names={"read", "open"})
    ledger.seed(CT, stored)
    total = ledger.total(CT)
    assert total.syscalls == {"read": 10, "open": 3} and total.syscalls_total == 13
    ledger.seed(CT, Tally(syscalls={"read": 100}))  # once per source and process
    assert ledger.total(CT).syscalls["read"] == 10
