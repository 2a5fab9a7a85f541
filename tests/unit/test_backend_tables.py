"""The shared open-prefix / connect-port tables with reference counts."""

from __future__ import annotations

import pytest

from podtrace_agent.backend import CapacityError
from podtrace_agent.bpf.tables import SharedValues


def test_shared_entries_and_refcounts() -> None:
    table = SharedValues[int](3)
    bits_a, placed_a = table.acquire([80, 443])
    bits_b, placed_b = table.acquire([443, 8080, 443])
    assert (bits_a, placed_a) == (0b011, [(0, 80), (1, 443)])
    assert (bits_b, placed_b) == (0b110, [(2, 8080)])
    assert table.release(bits_a) == [0]  # 443 still used by b
    assert table.used == 2
    assert table.acquire([22]) == (0b001, [(0, 22)])


def test_full_table_takes_nothing() -> None:
    table = SharedValues[str](2)
    table.acquire(["/etc"])
    with pytest.raises(CapacityError):
        table.acquire(["/etc", "/tmp", "/var"])
    assert table.used == 1
    assert table.acquire(["/etc", "/tmp"]) == (0b11, [(1, "/tmp")])


def test_release_of_unknown_bits_is_harmless() -> None:
    table = SharedValues[int](2)
    assert table.release(0b11) == []
