"""Checks of TracingPolicy and ContainerTrace specs that the CRD schema cannot
express: syscall names libseccomp does not know, rules that match the same
thing twice (which Event would win?), label keys and values in `matchLabels`
(a map's keys have no pattern in OpenAPI), and a zero duration.

Each problem names the field in wire form (`spec.rules[1].syscalls`) so the
`Valid=False` condition and the Warning Event tell the user what to change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from podtrace_api import syscalls
from podtrace_api.base import LabelSelector, parse_duration
from podtrace_api.containertrace import ContainerTraceSpec
from podtrace_api.observe import ObserveSpec, Rule
from podtrace_api.tracingpolicy import TracingPolicySpec

# k8s.io/apimachinery/pkg/util/validation: IsQualifiedName and IsValidLabelValue.
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a spec: where, and what."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def summary(problems: Iterable[Problem], limit: int = 900) -> str:
    """All problems on one line, bounded for a condition message.

    >>> summary([Problem("spec.duration", "must be longer than 0s")])
    'spec.duration: must be longer than 0s'
    """
    text = "; ".join(str(p) for p in problems)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_label_key(key: str) -> bool:
    """Whether `key` is a valid label key (an optional DNS prefix and a name).

    >>> is_label_key("app.kubernetes.io/name"), is_label_key("-x")
    (True, False)
    """
    prefix, _, name = key.rpartition("/")
    return (
        bool(_LABEL_KEY.match(key)) and len(name) <= 63 and len(prefix) <= 253
    )


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def check_selector(selector: LabelSelector | None, field: str) -> list[Problem]:
    if selector is None:
        return []
    problems = []
    for key, value in sorted(selector.match_labels.items()):
        if not is_label_key(key):
            problems.append(Problem(f"{field}.matchLabels", f"invalid label key {key!r}"))
        if not is_label_value(value):
            problems.append(
                Problem(f"{field}.matchLabels", f"invalid label value {value!r} for {key!r}")
            )
    for i, expr in enumerate(selector.match_expressions):
        for value in expr.values:
            if not is_label_value(value):
                problems.append(
                    Problem(f"{field}.matchExpressions[{i}].values",
                            f"invalid label value {value!r}")
                )  # fmt: skip
    return problems


def _unknown_syscalls(names: Iterable[str], field: str) -> list[Problem]:
    unknown = syscalls.unknown(names)
    if not unknown:
        return []
    names = ", ".join(unknown)
    return [Problem(field, f"unknown syscall(s) {names} (libseccomp does not know them)")]


def check_observe(observe: ObserveSpec, field: str) -> list[Problem]:
    return _unknown_syscalls(observe.syscalls.names, f"{field}.syscalls.names")


def check_rules(rules: Iterable[Rule], field: str) -> list[Problem]:
    """Unknown syscalls in rules, and any exec filename, syscall or open prefix that
    two rules both match: one event would have two reasons."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], str] = {}
    for i, rule in enumerate(rules):
        if rule.syscalls:
            problems += _unknown_syscalls(rule.syscalls, f"{field}[{i}].syscalls")
        for wire, values in (
            ("execFilenames", rule.exec_filenames),
            ("syscalls", rule.syscalls),
            ("openPathPrefixes", rule.open_path_prefixes),
        ):
            for value in values or ():
                owner = seen.setdefault((wire, value), rule.name)
                if owner != rule.name:
                    problems.append(
                        Problem(
                            f"{field}[{i}].{wire}",
                            f"{value} is already matched by rule {owner!r}",
                        )
                    )
    return problems


def check_policy(spec: TracingPolicySpec) -> list[Problem]:
    """Problems of a TracingPolicy spec the schema cannot catch (empty when valid)."""
    sel = spec.selector
    return sorted(
        check_selector(sel.namespace_selector, "spec.selector.namespaceSelector")
        + check_selector(sel.pod_selector, "spec.selector.podSelector")
        + check_selector(sel.node_selector, "spec.selector.nodeSelector")
        + check_observe(spec.observe, "spec.observe")
        + check_rules(spec.rules, "spec.rules")
    )


def check_trace(spec: ContainerTraceSpec) -> list[Problem]:
    """Problems of a ContainerTrace spec the schema cannot catch (empty when valid)."""
    problems = check_selector(spec.selector, "spec.selector") + check_observe(
        spec.observe, "spec.observe"
    )
    if spec.duration is not None and parse_duration(spec.duration).total_seconds() <= 0:
        problems.append(Problem("spec.duration", "must be longer than 0s"))
    return sorted(problems)
