"""Skip-or-fail for missing prerequisites.

A tier whose prerequisites are missing is skipped with a reason that says what
is missing; with PODTRACE_REQUIRE_ALL=1 (set in CI) the same skip is a failure,
so a green CI run can never hide a tier that did not run.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_all() -> bool:
    return os.environ.get("PODTRACE_REQUIRE_ALL", "") not in ("", "0", "false")


def missing(reason: str) -> None:
    """Skip (or fail under PODTRACE_REQUIRE_ALL=1) with `reason`."""
    if require_all():
        pytest.fail(f"prerequisite missing (PODTRACE_REQUIRE_ALL=1): {reason}", pytrace=False)
    pytest.skip(reason)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        missing(f"{what} needs root (run as root, e.g. sudo make test)")


def need_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"`{name}` not found on PATH: {hint}")
    return path  # type: ignore[return-value]


def not_on_this_kind_of_machine(reason: str, required_by: str) -> None:
    """Skip a tier this kind of machine can never run (e.g. kind without a Docker
    engine), even under PODTRACE_REQUIRE_ALL=1; `required_by` names the variable
    that makes it mandatory where it can run."""
    if os.environ.get(required_by, "") not in ("", "0", "false"):
        pytest.fail(f"prerequisite missing ({required_by}=1): {reason}", pytrace=False)
    pytest.skip(f"{reason} (set {required_by}=1 where it can run)")
