"""What the schema cannot catch: each problem names the field, and an invalid
policy or trace is kept out of the compile step."""

from __future__ import annotations

import pytest

from podtrace_operator.sources import parse_policy, parse_trace
from podtrace_operator.validation import Problem, is_label_key, is_label_value, summary


def policy_problems(spec: dict) -> list[str]:
    parsed = parse_policy({"metadata": {"name": "p", "generation": 2}, "spec": spec})
    assert (parsed.source is None) == bool(parsed.problems)
    return [str(p) for p in parsed.problems]


def trace_problems(spec: dict) -> list[str]:
    parsed = parse_trace({"metadata": {"name": "t", "namespace": "ns"}, "spec": spec})
    return [str(p) for p in parsed.problems]


def test_valid_policy_compiles_with_its_generation() -> None:
    parsed = parse_policy({"metadata": {"name": "p", "generation": 2}, "spec": {}})
    assert parsed.valid and parsed.source is not None
    assert parsed.source.generation == 2 and parsed.id == "TracingPolicy/p"
    assert parsed.source.wire["id"] == "TracingPolicy/p"


def test_unknown_syscall_names_are_named_with_their_field() -> None:
    problems = policy_problems({
        "observe": {"syscalls": {"mode": "Named", "names": ["openat", "opnat", "bogus"]}},
        "rules": [{"name": "r", "reason": "Denied", "syscalls": ["ptrace", "notacall"]}],
    })  # fmt: skip
    assert problems == [
        "spec.observe.syscalls.names: unknown syscall(s) bogus, opnat (libseccomp does not "
        "know them)",
        "spec.rules[0].syscalls: unknown syscall(s) notacall (libseccomp does not know them)",
    ]


def test_two_rules_matching_the_same_thing_conflict() -> None:
    problems = policy_problems({"rules": [
        {"name": "shell", "reason": "Shell", "execFilenames": ["/bin/sh", "/bin/bash"]},
        {"name": "bash", "reason": "Bash", "execFilenames": ["/bin/bash"]},
        {"name": "a", "reason": "A", "syscalls": ["ptrace"]},
        {"name": "b", "reason": "B", "syscalls": ["ptrace"]},
    ]})  # fmt: skip
    assert problems == [
        "spec.rules[1].execFilenames: /bin/bash is already matched by rule 'shell'",
        "spec.rules[3].syscalls: ptrace is already matched by rule 'a'",
    ]


def test_match_labels_keys_and_values_are_checked() -> None:
    problems = policy_problems({"selector": {
        "podSelector": {"matchLabels": {"bad key": "x", "app": "not valid!"}},
        "namespaceSelector": {"matchExpressions": [
            {"key": "env", "operator": "In", "values": ["-nope"]}]},
    }})  # fmt: skip
    assert problems == [
        "spec.selector.namespaceSelector.matchExpressions[0].values: invalid label value '-nope'",
        "spec.selector.podSelector.matchLabels: invalid label key 'bad key'",
        "spec.selector.podSelector.matchLabels: invalid label value 'not valid!' for 'app'",
    ]


def test_trace_zero_duration_and_schema_drift() -> None:
    assert trace_problems({"selector": {}, "duration": "0s"}) == [
        "spec.duration: must be longer than 0s"
    ]
    assert trace_problems({"selector": {}, "duration": "10m"}) == []
    drift = trace_problems({"selector": {}, "unknownField": 1})
    assert drift and drift[0].startswith("spec.unknownField:")


@pytest.mark.parametrize(
    ("key", "ok"),
    [("app", True), ("app.kubernetes.io/name", True), ("a/b/c", False), ("-a", False),
     ("x" * 63, True), ("x" * 64, False), ("Example.com/x", False), ("", False)],
)  # fmt: skip
def test_label_keys(key: str, ok: bool) -> None:
    assert is_label_key(key) is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("", True), ("a-b_c.d", True), ("-a", False), ("a" * 64, False)]
)
def test_label_values(value: str, ok: bool) -> None:
    assert is_label_value(value) is ok


def test_summary_is_bounded() -> None:
    text = summary([Problem(f"spec.f{i}", "x" * 50) for i in range(100)], limit=200)
    assert len(text) == 200 and text.endswith("...")
