"""The bcc backend's bookkeeping of entries and counter rows (bpf/rows.py)
against a model of the kernel's side that can run a cgroup hook between any two
map calls of user space, and fail any call: the races of issue 10, each on its
own, then random interleavings (hypothesis) that must end with every row in one
place, every filter reference released once, and no row counting two cgroups."""

from __future__ import annotations

import contextlib
import errno
from collections import Counter, deque
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from podtrace_agent.backend import BackendError, CapacityError
from podtrace_agent.bpf.rows import CONFIRM_S, QUARANTINE_S, Entry, RowBook, audit

AUTO = 0x1
SYSCALLS = 0x1


class FakeKernel:
    """The maps and the hooks of podtrace.c, as rows.Tables.

    `between(n, action)` runs `action` before the n-th next map call of user
    space (0: the next one); `fail(name, error)` makes the next call of `name`
    fail (an errno, or BackendError for the row reads and writes)."""

    def __init__(self, capacity: int, removed_capacity: int = 64) -> None:
        self.capacity = capacity
        self.removed_capacity = removed_capacity
        self.traced: dict[int, Entry] = {}
        self.queue: deque[int] = deque(range(capacity))
        self.owners: dict[int, int] = {}
        self.rows: dict[int, Counter[int]] = {row: Counter() for row in range(capacity)}
        self.removed_ids: dict[int, None] = {}  # insertion-ordered: the LRU drops the oldest
        self.cgroups: dict[int, str] = {}  # id -> "new" (not yet activated), "active", "gone"
        self.foreign = 0
        self.calls: Counter[str] = Counter()
        self._between: list[tuple[int, Callable[[], None]]] = []
        self._failures: dict[str, int] = {}

    # -- test controls ---------------------------------------------------------
    def between(self, n: int, action: Callable[[], None]) -> None:
        self._between.append((n, action))

    def fail(self, name: str, error: int) -> None:
        self._failures[name] = error

    def _enter(self, name: str) -> int:
        self.calls[name] += 1
        due = [(n, a) for n, a in self._between if n == 0]
        self._between = [(n - 1, a) for n, a in self._between if n > 0]
        for _, action in due:
            action()
        return self._failures.pop(name, 0)

    # -- the hooks -------------------------------------------------------------
    def mkdir(self, cgroup_id: int, auto: bool = True, activate: bool = True) -> None:
        """cgroup_mkdir: the tracepoint runs before the directory is activated."""
        self.cgroups[cgroup_id] = "new"
        if auto and self.queue:
            row = self.queue.popleft()
            self.owners[row] = cgroup_id
            if cgroup_id in self.traced or len(self.traced) >= self.capacity:
                self.queue.append(row)
            else:
                self.traced[cgroup_id] = Entry(SYSCALLS, row, flags=AUTO)
        if activate:
            self.cgroups[cgroup_id] = "active"

    def rmdir(self, cgroup_id: int) -> None:
        """cgroup_rmdir: the directory is gone, then the hook records it."""
        self.cgroups[cgroup_id] = "gone"
        self.removed_ids[cgroup_id] = None
        while len(self.removed_ids) > self.removed_capacity:
            del self.removed_ids[next(iter(self.removed_ids))]

    def syscall(self, cgroup_id: int) -> None:
        entry = self.traced.get(cgroup_id)
        if entry is None or not entry.mask & SYSCALLS:
            return
        if self.owners.get(entry.slot) != cgroup_id:
            self.foreign += 1
            return
        self.rows[entry.slot][cgroup_id] += 1

    # -- rows.Tables -----------------------------------------------------------
    def get(self, cgroup_id: int) -> Entry | None:
        self._enter("get")
        return self.traced.get(cgroup_id)

    def insert(self, cgroup_id: int, entry: Entry) -> int:
        if error := self._enter("insert"):
            return error
        if cgroup_id in self.traced:
            return errno.EEXIST
        if len(self.traced) >= self.capacity:
            return errno.E2BIG
        self.traced[cgroup_id] = entry
        return 0

    def update(self, cgroup_id: int, entry: Entry) -> int:
        if error := self._enter("update"):
            return error
        if cgroup_id not in self.traced:
            return errno.ENOENT
        self.traced[cgroup_id] = entry
        return 0

    def delete(self, cgroup_id: int) -> int:
        if error := self._enter("delete"):
            return error
        return 0 if self.traced.pop(cgroup_id, None) is not None else errno.ENOENT

    def entries(self) -> dict[int, Entry]:
        self._enter("entries")
        return dict(self.traced)

    def pop_row(self) -> int | None:
        self._enter("pop_row")
        return self.queue.popleft() if self.queue else None

    def push_row(self, row: int) -> int:
        if error := self._enter("push_row"):
            return error
        if len(self.queue) >= self.capacity:
            return errno.E2BIG
        self.queue.append(row)
        return 0

    def set_owner(self, row: int, cgroup_id: int) -> int:
        if error := self._enter("set_owner"):
            return error
        self.owners[row] = cgroup_id
        return 0

    def read_row(self, row: int) -> dict[int, int]:
        if self._enter("read_row"):
            raise BackendError(f"reading counter row {row}: injected")
        return {39: sum(self.rows[row].values())} if self.rows[row] else {}

    def zero_row(self, row: int) -> None:
        if self._enter("zero_row"):
            raise BackendError(f"zeroing counter row {row}: injected")
        self.rows[row].clear()

    def removed(self, cgroup_id: int) -> bool:
        self._enter("removed")
        return cgroup_id in self.removed_ids

    def alive(self, cgroup_id: int) -> bool:
        self._enter("alive")
        return self.cgroups.get(cgroup_id) == "active"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Filters:
    """Filter references as unique tokens: trace() hands one over, and it must
    be released exactly once, after it left the entry (or was never written)."""

    def __init__(self) -> None:
        self.live: set[int] = set()
        self._next = 1

    def acquire(self) -> int:
        token = self._next
        self._next += 1
        self.live.add(token)
        return token

    def release(self, prefixes: int, ports: int) -> None:
        for token in {prefixes, ports} - {0}:
            assert token in self.live, f"reference {token} released twice"
            self.live.remove(token)


def make(capacity: int = 4, **kernel: int) -> tuple[FakeKernel, RowBook, Filters, Clock]:
    k = FakeKernel(capacity, **kernel)
    filters, clock = Filters(), Clock()
    return k, RowBook(k, capacity, filters.release, clock=clock), filters, clock


def settle(k: FakeKernel, book: RowBook, clock: Clock) -> None:
    """What the backend's poll loop does over time: sweeps, then frees rows."""
    for _ in range(2):
        clock.now += CONFIRM_S + QUARANTINE_S
        book.sweep()
    book.release_due(force=True)


def check(k: FakeKernel, book: RowBook, filters: Filters) -> None:
    assert audit(k.capacity, k.traced, book.quarantined, k.queue, k.owners) == []
    assert filters.live == {e.open_prefixes for e in k.traced.values()} - {0}
    for cid, entry in k.traced.items():
        assert set(k.rows[entry.slot]) <= {cid}, "a row counts another cgroup's syscalls"
    assert k.foreign == 0


# -- the races, one by one ---------------------------------------------------------


def test_a_rewrite_after_the_rmdir_is_reclaimed_at_once() -> None:
    """trace() reads the entry, the cgroup is removed and its event lost, trace()
    writes the entry back: before, that entry (and its row) stayed forever."""
    k, book, filters, _ = make()
    k.mkdir(7)
    old = filters.acquire()
    book.trace(7, SYSCALLS, old)
    k.between(1, lambda: k.rmdir(7))  # after get(), before update()
    book.trace(7, SYSCALLS, filters.acquire())

    assert 7 not in k.traced
    assert book.counters["reclaimed_after_write"] == 1
    assert filters.live == set()
    check(k, book, filters)


def test_an_insert_after_the_rmdir_was_handled_is_reclaimed() -> None:
    """A caller whose picture is stale traces a cgroup whose removal was already
    handled: the entry would be inserted afresh, with no rmdir to come."""
    k, book, filters, clock = make()
    k.mkdir(7, auto=False)
    k.rmdir(7)
    book.trace(7, SYSCALLS, filters.acquire())

    assert 7 not in k.traced and book.quarantined
    settle(k, book, clock)
    check(k, book, filters)
    assert sorted(k.queue) == [0, 1, 2, 3]


def test_the_mkdir_hook_first_keeps_its_row() -> None:
    k, book, filters, _ = make()
    k.cgroups[7] = "active"
    k.between(2, lambda: k.mkdir(7))  # after get() and pop_row(), before set_owner()
    book.trace(7, SYSCALLS | 0x2, filters.acquire())

    entry = k.traced[7]
    assert (entry.mask, entry.flags) == (SYSCALLS | 0x2, AUTO)
    assert k.owners[entry.slot] == 7
    check(k, book, filters)


def test_a_release_that_fails_halfway_pushes_no_row_twice() -> None:
    """Rows were zeroed and pushed in a loop and the quarantine list replaced at
    its end: a failure on one row left the rows before it quarantined, already
    pushed, and pushed them again later, so two cgroups got one row."""
    k, book, filters, _ = make()
    for cid in (1, 2, 3):
        k.mkdir(cid)
        book.trace(cid, SYSCALLS)
        book.untrace(cid)
    assert len(book.quarantined) == 3 and len(k.queue) == 1
    k.between(2, lambda: k.fail("zero_row", 1))  # the second row's zeroing fails
    book.release_due(force=True)

    assert len(book.quarantined) == 1 and book.counters["zero_failed"] == 1
    book.release_due(force=True)
    assert sorted(k.queue) == [0, 1, 2, 3]
    check(k, book, filters)


def test_a_row_that_cannot_be_pushed_back_is_quarantined_not_lost() -> None:
    k, book, filters, clock = make(capacity=2)
    k.mkdir(7, auto=False)
    k.fail("insert", errno.E2BIG)
    k.fail("push_row", errno.EIO)
    with pytest.raises(CapacityError):
        book.trace(7, SYSCALLS, filters.acquire())

    assert book.quarantined == {0} and list(k.queue) == [1] and filters.live == set()
    settle(k, book, clock)
    assert sorted(k.queue) == [0, 1]
    check(k, book, filters)


def test_a_failed_rewrite_keeps_the_old_filters() -> None:
    """The old filter references were released before the rewrite: when it
    failed, the entry kept using entries that another cgroup could then take."""
    k, book, filters, _ = make()
    k.mkdir(7)
    old = filters.acquire()
    book.trace(7, SYSCALLS, old)
    k.fail("update", errno.ENOMEM)
    with pytest.raises(BackendError):
        book.trace(7, SYSCALLS, filters.acquire())

    assert filters.live == {old} and k.traced[7].open_prefixes == old
    check(k, book, filters)


def test_the_sweep_reclaims_a_recorded_removal_at_once() -> None:
    """The rmdir event was lost: the record in `removed` is enough."""
    k, book, filters, _ = make()
    k.mkdir(7)
    k.rmdir(7)
    book.sweep()
    assert 7 not in k.traced and book.counters["reclaimed_sweep"] == 1
    check(k, book, filters)


def test_the_sweep_reclaims_an_entry_whose_record_the_lru_dropped() -> None:
    k, book, filters, clock = make(removed_capacity=1)
    k.mkdir(7)
    k.rmdir(7)
    k.rmdir(8)  # evicts 7's record; 7's event was lost too
    book.sweep()
    assert 7 in k.traced  # unresolved once: could be a cgroup not yet activated
    clock.now += CONFIRM_S
    book.sweep()
    assert 7 not in k.traced and book.counters["reclaimed_unresolved"] == 1
    settle(k, book, clock)
    check(k, book, filters)


def test_a_cgroup_not_yet_activated_is_not_reclaimed() -> None:
    k, book, filters, clock = make()
    k.mkdir(7, activate=False)
    book.sweep()
    k.cgroups[7] = "active"
    clock.now += CONFIRM_S
    book.sweep()
    assert 7 in k.traced
    check(k, book, filters)


def test_final_counts_of_a_removed_cgroup_are_kept_once() -> None:
    k, book, _, _ = make()
    k.mkdir(7)
    for _ in range(5):
        k.syscall(7)
    k.rmdir(7)
    book.reclaim_quietly(7, "event")
    assert book.retired == {7: {39: 5}}


def test_audit_names_each_misplaced_row() -> None:
    problems = audit(4, {1: Entry(1, 0), 2: Entry(1, 0), 3: Entry(1, 9)}, [1], [1],
                     {0: 2, 9: 3})
    assert problems == [
        "row 0 is in 2 places: cgroup 1, cgroup 2",
        "row 0 of cgroup 1 is owned by 2",
        "row 1 is in 2 places: quarantine, queue",
        "row 2 is nowhere (leaked)",
        "row 3 is nowhere (leaked)",
        "row 9 is out of range, in cgroup 3",
    ]


# -- random interleavings ------------------------------------------------------------

KERNEL_ACTIONS = st.sampled_from(["rmdir", "mkdir", "rmdir-other", "syscall"])
FAILURES = st.sampled_from([
    ("insert", errno.E2BIG), ("update", errno.ENOMEM), ("delete", errno.EIO),
    ("push_row", errno.EIO), ("set_owner", errno.EIO), ("zero_row", 1), ("read_row", 1),
])


class Churn(RuleBasedStateMachine):
    """Containers come and go (the kernel's hooks, events sometimes lost) while
    user space traces and untraces them, with a hook run between two of its map
    calls and map calls failing now and then."""

    def __init__(self) -> None:
        super().__init__()
        self.k, self.book, self.filters, self.clock = make(capacity=4, removed_capacity=3)
        self.next_id = 100
        self.events: list[int] = []

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _pick(self, data: st.DataObject, states: set[str]) -> int | None:
        ids = sorted(c for c, s in self.k.cgroups.items() if s in states)
        return data.draw(st.sampled_from(ids)) if ids else None

    def _after_user_op(self) -> None:
        """A hook that was to run later did not; a cgroup made in the middle of
        the operation is activated by now (the kernel does it under cgroup_mutex
        right after the tracepoint, long before CONFIRM_S)."""
        self.k._between.clear()
        for cid, state in self.k.cgroups.items():
            if state == "new":
                self.k.cgroups[cid] = "active"

    def _kernel_action(self, kind: str, cgroup_id: int) -> Callable[[], None]:
        def act() -> None:
            if kind == "rmdir" and self.k.cgroups.get(cgroup_id) == "active":
                self.k.rmdir(cgroup_id)
            elif kind == "mkdir":
                self.k.mkdir(self._new_id(), activate=False)
            elif kind == "rmdir-other":
                others = [c for c, s in self.k.cgroups.items() if s == "active" and c != cgroup_id]
                if others:
                    self.k.rmdir(others[0])
            else:
                self.k.syscall(cgroup_id)
        return act

    @rule(auto=st.booleans())
    def mkdir(self, auto: bool) -> None:
        self.k.mkdir(self._new_id(), auto=auto)

    @rule(data=st.data(), lose_event=st.booleans())
    def rmdir(self, data: st.DataObject, lose_event: bool) -> None:
        cid = self._pick(data, {"active"})
        if cid is not None:
            self.k.rmdir(cid)
            if not lose_event:
                self.events.append(cid)

    @rule(data=st.data())
    def syscall(self, data: st.DataObject) -> None:
        cid = self._pick(data, {"active"})
        if cid is not None:
            self.k.syscall(cid)

    @rule()
    def poll(self) -> None:
        for cid in self.events:
            self.book.reclaim_quietly(cid, "event")
        self.events.clear()

    @rule(data=st.data(), mask=st.sampled_from([SYSCALLS, 0x2, SYSCALLS | 0x8]),
          with_filter=st.booleans(), race=st.none() | st.tuples(st.integers(0, 6), KERNEL_ACTIONS))
    def trace(self, data: st.DataObject, mask: int, with_filter: bool,
              race: tuple[int, str] | None) -> None:
        cid = self._pick(data, {"active", "gone"})  # a stale picture traces removed ones too
        if cid is None:
            return
        if race is not None:
            self.k.between(race[0], self._kernel_action(race[1], cid))
        token = self.filters.acquire() if with_filter else 0
        with contextlib.suppress(BackendError):  # CapacityError too: full, or injected
            self.book.trace(cid, mask, token)
        self._after_user_op()

    @rule(data=st.data(), race=st.none() | st.tuples(st.integers(0, 3), KERNEL_ACTIONS))
    def untrace(self, data: st.DataObject, race: tuple[int, str] | None) -> None:
        cid = self._pick(data, {"active", "gone"})
        if cid is None:
            return
        if race is not None:
            self.k.between(race[0], self._kernel_action(race[1], cid))
        with contextlib.suppress(BackendError):
            self.book.untrace(cid)
        self._after_user_op()

    @rule(failure=FAILURES)
    def fail_next(self, failure: tuple[str, int]) -> None:
        self.k.fail(*failure)

    @rule(seconds=st.sampled_from([0.1, QUARANTINE_S, CONFIRM_S]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def sweep(self) -> None:
        self.book.sweep()

    @rule()
    def release(self) -> None:
        self.book.release_due()

    @precondition(lambda self: len(self.k.cgroups) > 3)
    @rule()
    def settle_and_check_the_end_state(self) -> None:
        """Quiet again: every entry is a live cgroup's, every other row is free."""
        self.k._between.clear()
        self.k._failures.clear()
        self.poll()
        settle(self.k, self.book, self.clock)
        gone = {c for c, s in self.k.cgroups.items() if s == "gone"}
        assert not gone & set(self.k.traced), "an entry of a removed cgroup is left"
        assert len(self.k.queue) == self.k.capacity - len(self.k.traced)

    @invariant()
    def rows_and_references_are_exact(self) -> None:
        check(self.k, self.book, self.filters)


TestChurn = Churn.TestCase
TestChurn.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
