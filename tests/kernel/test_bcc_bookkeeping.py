"""Issue 10 part 6 on the real kernel: the bcc backend's entries and counter
rows under churn, with nothing mocked.

Threads create and remove container cgroups under a private kubepods (the
cgroup_mkdir hook auto-traces each one; the ring buffer is one page, so most
cgroup events are lost and the sweep has to find the removals) while other
threads trace and untrace them through the backend, some right as they are
removed and some after (a stale picture), and one thread polls. Meanwhile
processes in a few long-lived containers, whose entries are rewritten under
them, make exact getppid counts. Afterwards every counter row is in exactly one
place (one per live traced cgroup, the rest free), no two cgroups share a row,
every filter reference is held by an entry, and every count is exact.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kernel_support import ALL_PROBES, Hierarchy, require_bcc, run_helper

from podtrace_agent.backend import BackendOptions, CapacityError
from podtrace_agent.bpf.loader import BccBackend
from podtrace_agent.bpf.rows import CONFIRM_S, QUARANTINE_S, RowBook, audit
from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

CAPACITY = 256
RINGBUF_PAGES = 64  # 256 KiB, about 240 cgroup events: some are lost in the bursts
CHURN_S = 10.0
MAX_LIVE = 40  # churned containers alive at once, so that the survivors fit
KEEPERS = 6
PREFIXES = ("/etc/", "/tmp/", "/var/")
PORTS = (80, 443, 8080)
GETPPID = number_of("getppid")
MASKS = (Probe.SYSCALLS, Probe.SYSCALLS | Probe.EXEC, Probe.EXEC | Probe.EXIT | Probe.OPEN)


@dataclass(frozen=True)
class Cgroup:
    cid: int
    directory: Path
    rel: str


class Churn:
    """The shared state of the threads; the backend is called from one thread
    at a time (its contract), the kernel's hooks run whenever they run."""

    def __init__(self, backend: BccBackend, qos: Path, cgroup2: Path, pace: float) -> None:
        self.backend = backend
        self.pace = pace
        self.qos = qos
        self.cgroup2 = cgroup2
        self.backend_lock = threading.Lock()
        self.lock = threading.Lock()
        self.live: dict[int, Cgroup] = {}
        self.gone: deque[Cgroup] = deque(maxlen=256)
        self.figures: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def thread(self, body: Callable[[random.Random], None], seed: int) -> threading.Thread:
        def run() -> None:
            rng = random.Random(seed)
            try:
                while not self.stop.is_set():
                    body(rng)
            except BaseException as err:  # reported by the test, not lost in a thread
                self.errors.append(err)
                self.stop.set()
        return threading.Thread(target=run, name=body.__name__)

    def make(self, rng: random.Random) -> None:
        with self.lock:
            full = len(self.live) >= MAX_LIVE
        if full:
            time.sleep(0.001)
            return
        pod = self.qos / f"pod{uuid.uuid4()}"
        container = pod / (uuid.uuid4().hex * 2)
        pod.mkdir()
        container.mkdir()
        rel = str(container.relative_to(self.cgroup2))
        cgroup = Cgroup(container.stat().st_ino, container, rel)
        with self.lock:
            self.live[cgroup.cid] = cgroup
            self.figures["created"] += 1
        time.sleep(self.pace)

    def remove(self, rng: random.Random) -> None:
        with self.lock:
            if len(self.live) < MAX_LIVE // 2:
                cgroup = None
            else:
                cgroup = self.live.pop(rng.choice(list(self.live)))
        if cgroup is None:
            time.sleep(0.001)
            return
        cgroup.directory.rmdir()
        cgroup.directory.parent.rmdir()
        with self.lock:
            self.gone.append(cgroup)
            self.figures["removed"] += 1

    def trace(self, rng: random.Random) -> None:
        with self.lock:
            stale = self.gone and rng.random() < 0.25
            pool = list(self.gone) if stale else list(self.live.values())
        if not pool:
            time.sleep(0.001)
            return
        cgroup = rng.choice(pool)
        with self.backend_lock:
            try:
                if rng.random() < 0.3:
                    self.backend.untrace(cgroup.cid)
                    self.figures["untraced"] += 1
                else:
                    self.backend.trace(
                        cgroup.cid, cgroup.rel, rng.choice(MASKS),
                        tuple(rng.sample(PREFIXES, rng.randint(0, 2))),
                        tuple(rng.sample(PORTS, rng.randint(0, 2))),
                    )
                    self.figures["stale traces" if stale else "traces"] += 1
            except CapacityError:
                self.figures["capacity errors"] += 1
        time.sleep(self.pace)

    def poll(self, rng: random.Random) -> None:
        with self.backend_lock:
            self.backend.poll(0)
        time.sleep(0.002)


@pytest.fixture
def churn_kubepods(cgroup2: Path) -> Iterator[Hierarchy]:
    h = Hierarchy(cgroup2, f"podtrace-kt-{uuid.uuid4().hex[:8]}/kubepods")
    yield h
    qos = cgroup2 / h.kubepods / h.qos
    if qos.exists():
        for directory in sorted((p for p in qos.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
    h.cleanup()


def _drain_queue(book: RowBook) -> list[int]:
    """The free rows, popped and pushed back (only while no cgroup is created)."""
    tables = book.tables
    rows = []
    while (row := tables.pop_row()) is not None:
        rows.append(row)
    for row in rows:
        assert tables.push_row(row) == 0
    return rows


@pytest.mark.parametrize("pace", [0.0, 0.01], ids=["flat-out", "paced"])
def test_churn_ends_with_every_row_free_or_owned_and_exact_counts(
    churn_kubepods: Hierarchy, helper: Path, tmp_path: Path, pace: float
) -> None:
    """flat-out: rows are short most of the time (a row is quarantined 0.2 s after
    its cgroup goes), so the full paths run; paced: they mostly are not, so the
    writes that race with cgroup_rmdir run."""
    require_bcc()
    root = churn_kubepods.root()
    qos = churn_kubepods.mkdir(churn_kubepods.cgroup2 / root.path / churn_kubepods.qos)
    backend = BccBackend(root, BackendOptions(auto_trace_mask=ALL_PROBES, max_traced=CAPACITY),
                         ringbuf_pages=RINGBUF_PAGES)
    backend.start()
    try:
        _run(backend, churn_kubepods, qos, helper, tmp_path, pace)
    finally:
        backend.close()


def _run(backend: BccBackend, hierarchy: Hierarchy, qos: Path, helper: Path,
         tmp_path: Path, pace: float) -> None:
    book = backend.book
    keepers = [hierarchy.container(hierarchy.pod()) for _ in range(KEEPERS)]
    keeper_ids = [k.stat().st_ino for k in keepers]
    for directory, cid in zip(keepers, keeper_ids, strict=True):
        backend.trace(cid, hierarchy.rel(directory), Probe.SYSCALLS,
                      ("/etc/",))
    state = Churn(backend, qos, hierarchy.cgroup2, pace)
    expected: Counter[int] = Counter()

    def keep_counting(rng: random.Random) -> None:
        """One round: a helper in each keeper, while a tracer rewrites its entry."""
        runs = []
        for directory, cid in zip(keepers, keeper_ids, strict=True):
            n = rng.randint(1000, 5000)
            runs.append((cid, n, run_helper(helper, directory, n, wait_for_go=False,
                                            tmp_path=tmp_path)))
        for directory, cid in zip(keepers, keeper_ids, strict=True):
            with state.backend_lock:  # a mask change under running processes keeps counting
                backend.trace(cid, hierarchy.rel(directory),
                              rng.choice(MASKS[:2]), tuple(rng.sample(PREFIXES, 1)))
        for cid, n, run in runs:
            assert run.wait() == 0
            expected[cid] += n
        state.figures["keeper rounds"] += 1

    threads = [
        state.thread(state.make, 1), state.thread(state.make, 2),
        state.thread(state.remove, 3), state.thread(state.remove, 4),
        state.thread(state.trace, 5), state.thread(state.trace, 6),
        state.thread(state.poll, 7), state.thread(keep_counting, 8),
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    state.stop.wait(CHURN_S)
    state.stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - start
    assert not state.errors, state.errors

    # Quiet: handle what is left of the events, sweep (twice, CONFIRM_S apart, for
    # removals whose record the LRU dropped), free the quarantined rows.
    while backend.poll(0.05):
        pass
    book.sweep()
    time.sleep(CONFIRM_S + 0.1)
    book.sweep()
    time.sleep(QUARANTINE_S)
    book.release_due(force=True)
    reclaims = {k: v for k, v in book.counters.items() if k.startswith("reclaimed")}

    # Every survivor traced, churned ones with filters so that references count.
    survivors = {c.cid: c for c in state.live.values()}
    for i, cgroup in enumerate(survivors.values()):
        backend.trace(cgroup.cid, cgroup.rel, Probe.SYSCALLS,
                      PREFIXES[: i % 3], PORTS[: i % 2])
    entries = book.tables.entries()
    problems = audit(CAPACITY, entries, book.quarantined, _drain_queue(book),
                     book.tables.owners())
    assert problems == [], problems[:10]
    assert set(entries) == set(survivors) | set(keeper_ids)
    for name, table in (("open_prefixes", backend._prefixes), ("connect_ports", backend._ports)):
        held = Counter(i for e in entries.values() for i in range(table.capacity)
                       if getattr(e, name) >> i & 1)
        assert {i: r for i, r in enumerate(table._refs) if r} == dict(held), name

    # Exact counts: keepers counted all along, survivors from now.
    runs = [(cid, 700 + i, run_helper(helper, c.directory, 700 + i, wait_for_go=False,
                                      tmp_path=tmp_path))
            for i, (cid, c) in enumerate(survivors.items())]
    for cid, n, run in runs:
        assert run.wait() == 0
        expected[cid] += n
    counts = backend.syscall_counts()
    got = {cid: counts.get(cid, {}).get(GETPPID, 0) for cid in expected}
    assert got == dict(expected)
    kernel = backend.kernel_stats()
    assert kernel["foreign_row"] == 0, kernel

    created = state.figures["created"]
    print(
        f"\nchurn ({'paced' if pace else 'flat-out'}): {created} containers created and "
        f"{state.figures['removed']} removed in {elapsed:.1f} s: {created / elapsed:.0f} "
        f"containers/s, {2 * created / elapsed:.0f} cgroups/s made and as many removed (pods "
        f"included); {state.figures['traces']} traces, "
        f"{state.figures['stale traces']} of removed cgroups, {state.figures['untraced']} "
        f"untraces, {state.figures['capacity errors']} full, "
        f"{state.figures['keeper rounds']} counting rounds\n"
        f"reclaimed: {reclaims}; kernel: {kernel}; events seen "
        f"{backend.stats().events_seen}\n"
        f"end: {len(entries)} entries ({len(survivors)} survivors + {KEEPERS} keepers), "
        f"{CAPACITY - len(entries)} rows free, counts exact for {len(expected)} cgroups"
    )
    for cgroup in survivors.values():
        with contextlib.suppress(OSError):
            os.rmdir(cgroup.directory)
            os.rmdir(cgroup.directory.parent)
