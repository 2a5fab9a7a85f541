"""Unit tier: the Hypothesis profile every property test runs under, and a count of
the cases they ran, printed at the end of the session.

Profiles (HYPOTHESIS_PROFILE=<name>; default `podtrace`):

- `podtrace`: 300 examples per property, no deadline (a slow CI machine must not fail
  a parser for being slow), derandomized off: each run explores new inputs, and the
  example database (.hypothesis/) replays what failed before;
- `deep`: 10,000 examples per property, for a long fuzzing run.

Tests that set `max_examples` themselves keep their number. The count is of calls
to the test body (generated, explicit `@example`s and shrinking replays), summed
over the session: "hypothesis: N cases run by M property tests".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("podtrace", max_examples=300, deadline=None)
settings.register_profile("deep", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "podtrace"))

_CASES = pytest.StashKey[dict[str, int]]()


def _counting(inner: Callable[..., Any], counts: dict[str, int], nodeid: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        counts[nodeid] = counts.get(nodeid, 0) + 1
        return inner(*args, **kwargs)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Count the examples of a Hypothesis test through its documented `inner_test`."""
    hypothesis = getattr(getattr(item, "obj", None), "hypothesis", None)
    if hypothesis is None:
        yield
        return
    counts = item.config.stash.setdefault(_CASES, {})
    inner = hypothesis.inner_test
    hypothesis.inner_test = _counting(inner, counts, item.nodeid)
    try:
        yield
    finally:
        hypothesis.inner_test = inner


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    counts = config.stash.get(_CASES, {})
    if not counts:
        return
    profile = os.environ.get("HYPOTHESIS_PROFILE", "podtrace")
    terminalreporter.write_sep("-", "hypothesis")
    if config.getoption("verbose") > 0:
        for nodeid, n in sorted(counts.items()):
            terminalreporter.write_line(f"{n:8d}  {nodeid}")
    terminalreporter.write_line(
        f"hypothesis: {sum(counts.values())} cases run by {len(counts)} property tests "
        f"(profile {profile}, max_examples {settings.default.max_examples})"
    )
