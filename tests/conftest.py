"""Root conftest: tier markers follow the directory a test lives in."""

from __future__ import annotations

from pathlib import Path

import pytest

_TIERS = {"kernel", "runtime", "cluster", "install", "e2e"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS.intersection(parts):
            item.add_marker(getattr(pytest.mark, tier))
