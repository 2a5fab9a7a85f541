"""Kubernetes label selectors, matched exactly as the apiserver and kubectl do.

A selector is a conjunction of requirements; `matchLabels: {k: v}` is the
requirement `k In (v)`. An empty selector matches every object; an absent
selector in a podtrace spec also means "everything" (the API says so), so
`compile_selector(None)` is the match-all selector.

Per requirement (k8s.io/apimachinery/pkg/labels, Requirement.Matches):
In: the key is present with one of the values. NotIn: the key is absent, or
present with none of the values. Exists: present. DoesNotExist: absent.

    >>> compile_selector({"matchLabels": {"app": "web"}}).matches({"app": "web", "x": "y"})
    True
    >>> compile_selector({"matchExpressions": [
    ...     {"key": "tier", "operator": "NotIn", "values": ["db"]}]}).matches({})
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podtrace_api.base import LabelSelector, LabelSelectorOperator

IN = LabelSelectorOperator.IN.value
NOT_IN = LabelSelectorOperator.NOT_IN.value
EXISTS = LabelSelectorOperator.EXISTS.value
DOES_NOT_EXIST = LabelSelectorOperator.DOES_NOT_EXIST.value


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == IN:
            return labels.get(self.key) in self.values
        if self.operator == NOT_IN:
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return self.key in labels
        if self.operator == DOES_NOT_EXIST:
            return self.key not in labels
        raise ValueError(f"unknown label selector operator {self.operator!r}")


@dataclass(frozen=True)
class Selector:
    """A compiled selector: all requirements must hold."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def matches_all(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


MATCH_ALL = Selector()


def compile_selector(selector: LabelSelector | Mapping[str, Any] | None) -> Selector:
    """Compile a selector (model, wire dict or None for "absent: everything")."""
    if selector is None:
        return MATCH_ALL
    if isinstance(selector, LabelSelector):
        labels: Mapping[str, str] = selector.match_labels
        expressions = [
            (e.key, str(e.operator), list(e.values)) for e in selector.match_expressions
        ]
    else:
        labels = selector.get("matchLabels") or {}
        expressions = [
            (e["key"], e["operator"], list(e.get("values") or []))
            for e in selector.get("matchExpressions") or []
        ]
    reqs = [Requirement(k, IN, frozenset([v])) for k, v in labels.items()]
    reqs += [Requirement(k, op, frozenset(vs)) for k, op, vs in expressions]
    # Sorted so that equal selectors compile to equal values (cheap change detection).
    reqs.sort(key=lambda r: (r.key, r.operator, sorted(r.values)))
    return Selector(tuple(reqs))
