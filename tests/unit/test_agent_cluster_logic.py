"""Pure logic of the agent's cluster mode: rules and event limiting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from podtrace_agent.cluster.eventlimit import Action, EventLimiter
from podtrace_agent.cluster.rules import RuleSet, count_delta
from podtrace_api.nodetracer import TraceSource
from podtrace_api.syscalls import number_of


def _source(sid: str, **spec) -> TraceSource:
    kind, _, rest = sid.partition("/")
    ns, _, name = rest.rpartition("/")
    return TraceSource.model_validate(
        {"id": sid, "kind": kind, "name": name, **({"namespace": ns} if ns else {}), **spec}
    )


SHELLS = _source("TracingPolicy/shells", rules=[
    {"name": "shell", "reason": "ShellInContainer", "execFilenames": ["/bin/sh", "/bin/bash"]},
    {"name": "ptrace", "reason": "DeniedSyscall", "syscalls": ["ptrace", "mount"]},
    {"name": "secrets", "reason": "Secrets", "type": "Normal",
     "openPathPrefixes": ["/run/secrets/"]},
])
OTHER = _source("TracingPolicy/other", rules=[
    {"name": "sh", "reason": "Sh", "execFilenames": ["/bin/sh"]},
])


def test_exec_rules_match_only_selected_sources() -> None:
    rules = RuleSet([SHELLS, OTHER])
    both = frozenset({SHELLS.id, OTHER.id})
    assert sorted(m.ref.rule for m in rules.on_exec("/bin/sh", both)) == ["sh", "shell"]
    assert [m.ref.rule for m in rules.on_exec("/bin/sh", frozenset({OTHER.id}))] == ["sh"]
    assert rules.on_exec("/bin/true", both) == []
    assert rules.on_exec("/bin/bash", frozenset()) == []


def test_open_and_syscall_rules() -> None:
    rules = RuleSet([SHELLS])
    sel = frozenset({SHELLS.id})
    assert [m.ref.rule for m in rules.on_open("/run/secrets/token", sel)] == ["secrets"]
    assert rules.on_open("/run/secretsX", sel) == []
    ptrace = number_of("ptrace")
    matches = rules.on_syscalls({ptrace: 3, number_of("read"): 10}, sel)
    assert [(m.ref.rule, m.what, m.count) for m in matches] == [("ptrace", "ptrace", 3)]
    assert rules.watched_syscalls == {ptrace, number_of("mount")}


@given(st.dictionaries(st.integers(0, 400), st.integers(0, 10**6)),
       st.dictionaries(st.integers(0, 400), st.integers(0, 10**6)))
def test_count_delta_is_what_was_added(before: dict[int, int], extra: dict[int, int]) -> None:
    now = dict(before)
    for nr, n in extra.items():
        now[nr] = now.get(nr, 0) + n
    assert count_delta(before, now) == {nr: n for nr, n in extra.items() if n}


def test_event_series_are_rate_limited() -> None:
    limiter = EventLimiter(interval=30, per_pod_series=2)
    for i in range(100):
        limiter.record("pod-a", SHELLS.id, "shell", "/bin/sh", now=float(i) / 10)
    [(action, series)] = limiter.due(now=10.0)
    assert action is Action.CREATE and series.count == 100
    limiter.written(series, now=10.0)
    limiter.record("pod-a", SHELLS.id, "shell", "/bin/sh", now=11.0)
    assert limiter.due(now=20.0) == []  # within the interval: no write
    [(action, series)] = limiter.due(now=40.0)
    assert action is Action.UPDATE and series.count == 101
    limiter.written(series, now=40.0)
    assert limiter.due(now=100.0) == []  # nothing new: nothing to write


def test_per_pod_budget_caps_new_series() -> None:
    limiter = EventLimiter(interval=30, per_pod_series=2)
    opened = [limiter.record("pod-a", "s", f"r{i}", "x", now=0.0) for i in range(5)]
    assert [s is not None for s in opened] == [True, True, False, False, False]
    assert limiter.record("pod-b", "s", "r0", "x", now=0.0) is not None  # other pods unaffected
    assert limiter.record("pod-a", "s", "r9", "x", now=31.0) is not None  # budget refills
    limiter.forget_pod("pod-a")
    assert all(s.key[0] == "pod-b" for _, s in limiter.due(now=100.0))


def test_failed_write_is_retried() -> None:
    limiter = EventLimiter(interval=30)
    limiter.record("p", "s", "r", "x", now=0.0)
    assert len(limiter.due(now=1.0)) == 1
    assert len(limiter.due(now=2.0)) == 1  # not written: still due

