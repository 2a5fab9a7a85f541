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

    def __post_init__(self) -> None:
        if self.operator not in (IN, NOT_IN, EXISTS, DOES_NOT_EXIST):
            raise ValueError(f"unknown label selector operator {self.operator!r}")


_ABSENT = object()


@dataclass(frozen=True)
class Selector:
    """A compiled selector: all requirements must hold."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def matches_all(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        # Inlined Requirement.matches: this runs pods × policies times in a compile.
        for req in self.requirements:
            value = labels.get(req.key, _ABSENT)
            op = req.operator
            if op == IN:
                if value not in req.values:
                    return False
            elif op == NOT_IN:
                if value in req.values:
                    return False
            elif op == EXISTS:
                if value is _ABSENT:
                    return False
            elif value is not _ABSENT:  # DoesNotExist
                return False
        return True


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
