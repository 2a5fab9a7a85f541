"""Counter rows and `traced` entries: the bookkeeping user space shares with the
BPF program's cgroup hooks, written so that no interleaving with them leaks a
row or gives two cgroups one row. Pure: the maps are behind `Tables` (the bcc
backend's are real ones; the unit tests' a model that runs the kernel's side
between any two calls and fails any call on demand).

Who writes what (podtrace.c):

- cgroup_mkdir (kernel) pops a row from `free_slots`, sets `row_owner[row]`
  and inserts an AUTO entry holding the row, or pushes the row back;
- cgroup_rmdir (kernel) records the cgroup in `removed` (an LRU map only it
  writes) and sends an event, which is lost when the ring buffer is full;
- sys_enter counts into the row of the entry it looked up, if the row's owner
  is that cgroup;
- user space (one thread) sets row owners, inserts, rewrites and deletes
  entries, pops rows and pushes them back zeroed after a quarantine (a
  sys_enter that looked the entry up just before the delete may still count).

User space cannot compare-and-set an entry, and a cgroup can be removed between
any two of its calls. So:

1. Writes say what they expect: insert only if absent, rewrite only if present.
2. After every write of an entry, user space looks the cgroup up in `removed`:
   a write may re-create the entry of a cgroup whose removal it has already
   handled, or whose rmdir event will be lost. Found: the entry is reclaimed
   at once. The record cannot be overwritten by user space, so a write that
   comes before the rmdir is seen by the sweep later.
3. The sweep reclaims every entry recorded in `removed`, and, for records the
   LRU dropped, every entry whose cgroup id has not resolved (`Tables.alive`)
   for CONFIRM_S: a cgroup is briefly unresolvable right after cgroup_mkdir
   too (the tracepoint runs before the kernfs node is activated), never for
   long.
4. A row is pushed back exactly once: it leaves the quarantine only once its
   push succeeded, and one that cannot be pushed back is quarantined again.
5. Filter references pass from the caller to the entry, and are released once:
   the old ones after a rewrite succeeded, the entry's when it is deleted.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from ..backend import BackendError, CapacityError

log = logging.getLogger(__name__)

QUARANTINE_S = 0.2
CONFIRM_S = 1.0
FREE = 0  # row_owner of a row in the free queue (no cgroup has id 0)


@dataclass(frozen=True)
class Entry:
    """A value of the `traced` map (struct traced_cgroup)."""

    mask: int
    slot: int
    open_prefixes: int = 0
    connect_ports: int = 0
    flags: int = 0


class Tables(Protocol):
    """The maps, one call one syscall. Map writes return an errno (0: done) so
    that the caller knows whether the write happened."""

    def get(self, cgroup_id: int) -> Entry | None: ...

    def insert(self, cgroup_id: int, entry: Entry) -> int:
        """Only if absent (BPF_NOEXIST): EEXIST when present, E2BIG when full."""
        ...

    def update(self, cgroup_id: int, entry: Entry) -> int:
        """Only if present (BPF_EXIST): ENOENT when absent."""
        ...

    def delete(self, cgroup_id: int) -> int: ...

    def entries(self) -> dict[int, Entry]: ...

    def pop_row(self) -> int | None:
        """A free row from `free_slots`, None when it is empty."""
        ...

    def push_row(self, row: int) -> int: ...

    def set_owner(self, row: int, cgroup_id: int) -> int: ...

    def read_row(self, row: int) -> dict[int, int]:
        """syscall nr -> count; raises BackendError."""
        ...

    def zero_row(self, row: int) -> None:
        """Raises BackendError."""
        ...

    def removed(self, cgroup_id: int) -> bool:
        """Whether cgroup_rmdir recorded the cgroup (as long as the LRU keeps it)."""
        ...

    def alive(self, cgroup_id: int) -> bool:
        """Whether the id resolves to a cgroup; True when that cannot be told."""
        ...


ReleaseFilters = Callable[[int, int], None]


class RowBook:
    """Entries and counter rows of one loaded program (see the module docstring).

    `release_filters(open_prefixes, connect_ports)` drops the references of an
    entry's filter bits.
    """

    def __init__(
        self,
        tables: Tables,
        capacity: int,
        release_filters: ReleaseFilters,
        *,
        quarantine_s: float = QUARANTINE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tables = tables
        self.capacity = capacity
        self._release_filters = release_filters
        self._quarantine_s = quarantine_s
        self._clock = clock
        self._quarantine: dict[int, float] = {}  # row -> when it may be zeroed and pushed
        self._unresolved: dict[int, float] = {}  # cgroup id -> when it first did not resolve
        # Final counts of reclaimed cgroups, until the next syscall_counts().
        self.retired: dict[int, dict[int, int]] = {}
        # Entries reclaimed per path, failures left for later: figures for tests and logs.
        self.counters: Counter[str] = Counter()

    @property
    def quarantined(self) -> frozenset[int]:
        return frozenset(self._quarantine)

    # -- entries ---------------------------------------------------------------

    def trace(
        self, cgroup_id: int, mask: int, open_prefixes: int = 0, connect_ports: int = 0
    ) -> None:
        """Insert or rewrite the entry of `cgroup_id` (a rewrite keeps the row and
        its counts). Takes over the caller's references on the filter bits,
        releasing them when they are not written. A cgroup found removed is
        reclaimed, with no error: its rmdir event says it is gone."""
        written = False
        try:
            self._write(cgroup_id, mask, open_prefixes, connect_ports)
            written = True
        finally:
            if not written:
                self._release_filters(open_prefixes, connect_ports)
        if self.tables.removed(cgroup_id):
            self.reclaim_quietly(cgroup_id, "after_write")
        elif not self.tables.alive(cgroup_id):
            self._unresolved.setdefault(cgroup_id, self._clock())

    def _write(self, cgroup_id: int, mask: int, prefixes: int, ports: int) -> None:
        entry = self.tables.get(cgroup_id)
        if entry is None:
            row = self.pop_row()
            if row is None:
                raise CapacityError(f"all {self.capacity} counter rows are in use")
            if error := self.tables.set_owner(row, cgroup_id):
                self._requeue(row)
                raise BackendError(f"handing counter row {row} out: {os.strerror(error)}")
            error = self.tables.insert(cgroup_id, Entry(mask, row, prefixes, ports))
            if not error:
                return
            self._requeue(row)
            if error != errno.EEXIST:
                raise CapacityError(f"cannot trace cgroup {cgroup_id}: {os.strerror(error)}")
            # The cgroup_mkdir hook got there first: keep its row, rewrite the rest.
            entry = self.tables.get(cgroup_id)
            if entry is None:
                raise BackendError(f"the entry of cgroup {cgroup_id} vanished")
        new = replace(entry, mask=mask, open_prefixes=prefixes, connect_ports=ports)
        if error := self.tables.update(cgroup_id, new):
            raise BackendError(f"rewriting the entry of cgroup {cgroup_id}: {os.strerror(error)}")
        # Only now: until the rewrite, the kernel used the old filter entries.
        self._release_filters(entry.open_prefixes, entry.connect_ports)

    def untrace(self, cgroup_id: int) -> bool:
        """Delete the entry, quarantine its row, release its filters; False when absent."""
        self._unresolved.pop(cgroup_id, None)
        entry = self.tables.get(cgroup_id)
        if entry is None:
            return False
        error = self.tables.delete(cgroup_id)
        if error == errno.ENOENT:
            return False
        if error:
            raise BackendError(f"deleting the entry of cgroup {cgroup_id}: {os.strerror(error)}")
        self._quarantine[entry.slot] = self._clock() + self._quarantine_s
        self._release_filters(entry.open_prefixes, entry.connect_ports)
        return True

    def reclaim(self, cgroup_id: int, why: str) -> None:
        """A removed cgroup: keep its final counts for one syscall_counts(), then
        untrace it. A row that cannot be read leaves the entry for the sweep."""
        entry = self.tables.get(cgroup_id)
        if entry is None:
            return
        final = self.tables.read_row(entry.slot)
        if final:
            self.retired[cgroup_id] = final
        if self.untrace(cgroup_id):
            self.counters[f"reclaimed_{why}"] += 1

    def reclaim_quietly(self, cgroup_id: int, why: str) -> None:
        """reclaim() where a failure must not stop the caller: the sweep retries."""
        try:
            self.reclaim(cgroup_id, why)
        except BackendError as err:
            self.counters["reclaim_failed"] += 1
            log.warning("reclaiming cgroup %d failed, the sweep retries: %s", cgroup_id, err)

    def sweep(self) -> None:
        """Reclaim every entry of a removed cgroup whose rmdir event was lost, or
        came before user space wrote the entry."""
        now = self._clock()
        entries = self.tables.entries()
        self._unresolved = {c: t for c, t in self._unresolved.items() if c in entries}
        for cgroup_id in entries:
            if self.tables.removed(cgroup_id):
                self.reclaim_quietly(cgroup_id, "sweep")
            elif self.tables.alive(cgroup_id):
                self._unresolved.pop(cgroup_id, None)
            elif now - self._unresolved.setdefault(cgroup_id, now) >= CONFIRM_S:
                self.reclaim_quietly(cgroup_id, "unresolved")

    # -- rows ------------------------------------------------------------------

    def pop_row(self) -> int | None:
        self.release_due()
        return self.tables.pop_row()

    def adopt_quarantined(self, rows: Iterable[int]) -> None:
        """Rows a previous agent left in its quarantine (`orphaned_rows`): zeroed
        and freed like any other."""
        for row in rows:
            self._quarantine.setdefault(row, self._clock())

    def _requeue(self, row: int) -> None:
        """Give back a row popped but not used (still zero), ownerless."""
        if self.tables.set_owner(row, FREE) or self.tables.push_row(row):
            self._quarantine[row] = self._clock()

    def release_due(self, force: bool = False) -> None:
        """Zero and push back the rows whose quarantine is over, each on its own:
        a row leaves the quarantine only once pushed, so none is pushed twice."""
        now = self._clock()
        for row, due in sorted(self._quarantine.items(), key=lambda item: item[1]):
            if not force and due > now:
                break
            try:
                self.tables.zero_row(row)
            except BackendError as err:
                self.counters["zero_failed"] += 1
                log.warning("zeroing counter row %d failed, retried later: %s", row, err)
                continue
            if error := self.tables.set_owner(row, FREE) or self.tables.push_row(row):
                self.counters["push_failed"] += 1
                log.warning("freeing counter row %d failed, retried later: %s", row,
                            os.strerror(error))
                continue
            del self._quarantine[row]


def orphaned_rows(entries: Mapping[int, Entry], owners: Mapping[int, int]) -> set[int]:
    """Rows owned by a cgroup whose entry does not hold them: left in the
    quarantine of an agent that was killed (or, for an instant, being handed out
    by cgroup_mkdir between setting the owner and inserting the entry: so a
    caller takes only rows found orphaned twice, a moment apart). Free rows are
    owned by no one (FREE).

    >>> orphaned_rows({7: Entry(1, 0)}, {0: 7, 1: 9, 2: FREE})
    {1}
    """
    return {
        row for row, owner in owners.items()
        if owner != FREE and (owner not in entries or entries[owner].slot != row)
    }


def audit(
    capacity: int,
    entries: Mapping[int, Entry],
    quarantined: Iterable[int],
    queued: Iterable[int],
    owners: Mapping[int, int] | None = None,
) -> list[str]:
    """What is wrong with the rows: each must be in exactly one place (the entry
    of one cgroup, the quarantine, or once in the free queue), and a row in an
    entry must be owned by that entry's cgroup (`owners`: row -> cgroup id).

    >>> audit(3, {7: Entry(1, 0)}, [1], [2], {0: 7})
    []
    >>> audit(3, {7: Entry(1, 0), 8: Entry(1, 0)}, [], [0, 2])
    ['row 0 is in 3 places: cgroup 7, cgroup 8, queue', 'row 1 is nowhere (leaked)']
    """
    places: dict[int, list[str]] = {row: [] for row in range(capacity)}
    problems: list[tuple[int, str]] = []
    located = [(entry.slot, f"cgroup {cid}") for cid, entry in sorted(entries.items())]
    located += [(row, "quarantine") for row in quarantined]
    located += [(row, "queue") for row in queued]
    for row, place in located:
        if row in places:
            places[row].append(place)
        else:
            problems.append((row, f"row {row} is out of range, in {place}"))
    for row, where in places.items():
        if not where:
            problems.append((row, f"row {row} is nowhere (leaked)"))
        elif len(where) > 1:
            problems.append((row, f"row {row} is in {len(where)} places: {', '.join(where)}"))
    if owners is not None:
        for cid, entry in sorted(entries.items()):
            if owners.get(entry.slot) != cid:
                problems.append((entry.slot, f"row {entry.slot} of cgroup {cid} is owned by "
                                             f"{owners.get(entry.slot)}"))
    return [text for _, text in sorted(problems)]
