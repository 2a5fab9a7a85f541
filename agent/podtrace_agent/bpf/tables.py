"""Small user-space bookkeeping for the BPF side's fixed tables (pure, no BPF).

The open-prefix and connect-port arrays are shared by all traced cgroups: each
cgroup holds a bitmask of the entries that apply to it. `SharedValues` hands
out entries with reference counts so that cgroups asking for the same prefix
share one entry, and frees an entry when its last user goes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from ..backend import CapacityError

V = TypeVar("V", bound=Hashable)


class SharedValues(Generic[V]):
    """Up to `capacity` distinct values, each at a fixed index while in use.

    >>> t = SharedValues[str](2)
    >>> t.acquire(["/etc", "/tmp"])
    (3, [(0, '/etc'), (1, '/tmp')])
    >>> t.acquire(["/etc"])
    (1, [])
    >>> t.release(3)
    [1]
    >>> t.used
    1
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._index: dict[V, int] = {}
        self._refs = [0] * capacity
        self._values: list[V | None] = [None] * capacity

    @property
    def used(self) -> int:
        return len(self._index)

    def acquire(self, values: Iterable[V]) -> tuple[int, list[tuple[int, V]]]:
        """Take a reference on each of `values`: (the bitmask of their indexes,
        the (index, value) pairs newly placed, which the caller must write).
        Raises CapacityError, taking nothing, when they do not all fit."""
        wanted = list(dict.fromkeys(values))
        new = [v for v in wanted if v not in self._index]
        free = [i for i, refs in enumerate(self._refs) if refs == 0]
        if len(new) > len(free):
            raise CapacityError(
                f"{len(new)} new values do not fit: {len(free)} of {self.capacity} entries free"
            )
        placed = list(zip(free, new, strict=False))
        for index, value in placed:
            self._index[value] = index
            self._values[index] = value
        bits = 0
        for value in wanted:
            index = self._index[value]
            self._refs[index] += 1
            bits |= 1 << index
        return bits, placed

    def adopt(self, index: int, value: V) -> None:
        """One more reference on a value found at `index` in the kernel's table
        (an agent resuming pinned maps rebuilds the references from the entries'
        bits).

        >>> t = SharedValues[int](4)
        >>> t.adopt(2, 443); t.adopt(2, 443); t.acquire([443])
        (4, [])
        >>> t.release(4), t.release(4), t.release(4)
        ([], [], [2])
        """
        if self._values[index] not in (None, value):
            raise ValueError(f"entry {index} holds {self._values[index]!r}, not {value!r}")
        self._values[index] = value
        self._index[value] = index
        self._refs[index] += 1

    def release(self, bits: int) -> list[int]:
        """Drop one reference on each index in `bits`; the indexes freed."""
        freed = []
        for index in range(self.capacity):
            if bits & (1 << index) and self._refs[index] > 0:
                self._refs[index] -= 1
                if self._refs[index] == 0:
                    value = self._values[index]
                    self._values[index] = None
                    del self._index[value]  # type: ignore[arg-type]
                    freed.append(index)
        return freed
