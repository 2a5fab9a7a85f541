"""Label selector matching: Kubernetes semantics, checked by example and against
a naive reference written straight from the API documentation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podtrace_api.base import LabelSelector
from podtrace_operator.selectors import MATCH_ALL, compile_selector


def reference_matches(selector: dict, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector as documented: matchLabels and matchExpressions ANDed."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "web"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
        ({"matchLabels": {"app": "web"}}, {}, False),
        ({"matchLabels": {"app": "web", "tier": "fe"}}, {"app": "web"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]},
         {"app": "b"}, True),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]},
         {"app": "a"}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]},
         {"app": "b"}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": "x"}, False),
        ({"matchLabels": {"app": "web"},
          "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
         {"app": "web", "env": "dev"}, False),
    ],
)  # fmt: skip
def test_kubernetes_semantics(selector: dict, labels: dict, expected: bool) -> None:
    assert compile_selector(selector).matches(labels) is expected
    assert compile_selector(LabelSelector.model_validate(selector)).matches(labels) is expected


def test_absent_selector_matches_everything() -> None:
    assert compile_selector(None) is MATCH_ALL
    assert MATCH_ALL.matches({}) and MATCH_ALL.matches({"x": "y"})


def test_equal_selectors_compile_equal_whatever_the_order() -> None:
    a = {"matchLabels": {"a": "1", "b": "2"},
         "matchExpressions": [{"key": "c", "operator": "Exists"},
                              {"key": "d", "operator": "In", "values": ["x", "y"]}]}  # fmt: skip
    b = {"matchExpressions": [{"key": "d", "operator": "In", "values": ["y", "x"]},
                              {"key": "c", "operator": "Exists"}],
         "matchLabels": {"b": "2", "a": "1"}}  # fmt: skip
    assert compile_selector(a) == compile_selector(b)


KEYS = st.sampled_from(["app", "tier", "env", "example.com/team"])
VALUES = st.sampled_from(["", "a", "b", "web", "prod"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=4)


@st.composite
def selectors(draw: st.DrawFn) -> dict:
    selector: dict = {}
    if draw(st.booleans()):
        selector["matchLabels"] = draw(st.dictionaries(KEYS, VALUES, max_size=3))
    exprs = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        expr = {"key": draw(KEYS), "operator": op}
        if op in ("In", "NotIn"):
            expr["values"] = draw(st.lists(VALUES, min_size=1, max_size=3))
        exprs.append(expr)
    if exprs or draw(st.booleans()):
        selector["matchExpressions"] = exprs
    return selector


@given(selectors(), LABELS)
def test_matches_like_the_reference(selector: dict, labels: dict[str, str]) -> None:
    assert compile_selector(selector).matches(labels) == reference_matches(selector, labels)
    model = LabelSelector.model_validate(selector)
    assert compile_selector(model).matches(labels) == reference_matches(selector, labels)
