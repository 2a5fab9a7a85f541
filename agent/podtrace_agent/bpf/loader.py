"""The bcc backend: compiles bpf/podtrace.c with knobs as cflags, programs its
maps from user space and reads events and counters back.

Counter rows: each traced cgroup owns one row of the `counts` array
(NR_SYSCALLS_MAX columns), one copy for all CPUs (atomic adds, podtrace.c).
Free rows wait in the BPF queue `free_slots`, which both the cgroup_mkdir hook
(auto-tracing) and trace() pop from. How entries and rows are kept exact
while the kernel's hooks run concurrently is rows.py's part; `BccTables` is
its view of the real maps.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

from ..backend import (
    BackendError,
    BackendOptions,
    BackendStats,
    CgroupEvent,
    Event,
    KubepodsRootLike,
    MapStat,
    SourceLimits,
    below_kubepods,
    kubepods_absolute,
)
from ..ftrace.tracefs import TracefsError, event_fields, find_tracefs
from ..kubepods import qos_names
from . import btf, pins
from .fhandle import CgroupHandles
from .memory import MapMemory, parse_fdinfo
from .rows import Entry, RowBook, orphaned_rows
from .tables import SharedValues
from .wire import BPF_DIR, C, OpenPrefix, TracedCgroup, decode, decode_marker

log = logging.getLogger(__name__)
PROGRAM = BPF_DIR / "podtrace.c"
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
SWEEP_INTERVAL_S = 5.0
# After events were lost (some may be rmdirs), sweep sooner, at most this often.
LOSS_SWEEP_S = 0.5
COLUMNS = C["NR_SYSCALLS_MAX"]
# Reported as the syscall number of the last column (numbers beyond the table).
OTHER_SYSCALL = -1


def program_cflags(
    kubepods: KubepodsRootLike,
    options: BackendOptions,
    *,
    ringbuf_pages: int,
    syscalls: dict[str, int | None],
    offsets: dict[str, int],
    exit_has_group_dead: bool,
) -> list[str]:
    """The knobs of podtrace.c as clang flags (see the list at its top)."""
    besteffort, burstable = qos_names(kubepods.path)
    flags = [
        f"-I{BPF_DIR}",
        f"-DKUBEPODS_ID={kubepods.cgroup_id}ULL",
        f"-DKUBEPODS_LEVEL={kubepods.level}",
        f'-DKUBEPODS_PATH="{kubepods_absolute(kubepods)}"',
        f'-DQOS_BESTEFFORT="{besteffort}/"',
        f'-DQOS_BURSTABLE="{burstable}/"',
        f"-DAUTO_TRACE_MASK={int(options.auto_trace_mask)}",
        f"-DMAX_TRACED={options.max_traced}",
        f"-DMAX_REMOVED={removed_capacity(options.max_traced)}",
        f"-DRINGBUF_PAGES={ringbuf_pages}",
    ]
    for name in ("open", "openat", "connect", "prctl"):
        number = syscalls.get(name)
        flags.append(f"-DNR_{name.upper()}={-1 if number is None else number}")
    flags += [f"-D{macro}={value}" for macro, value in sorted(offsets.items())]
    if exit_has_group_dead:
        flags.append("-DEXIT_HAS_GROUP_DEAD")
    return flags


def removed_capacity(max_traced: int) -> int:
    """Records of the `removed` LRU map: enough for the rmdirs of several sweep
    intervals at any churn a node sees; past it the sweep's slower check applies.

    >>> removed_capacity(512), removed_capacity(16)
    (2048, 1024)
    """
    return max(4 * max_traced, 1024)


def _errno(rc: int) -> int:
    """The error of a libbpf call: libbpf returns -errno, older wrappers -1 and errno."""
    if rc >= 0:
        return 0
    return -rc if rc < -1 else (ctypes.get_errno() or 1)


def possible_cpus() -> int:
    """num_possible_cpus(): what per-CPU maps are sized by."""
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


class CounterRows:
    """Rows of the `counts` array, read and zeroed one row per syscall with the
    map batch operations (key of the batch cursor: the previous index)."""

    def __init__(self, map_fd: int) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self._fd = map_fd
        self._keys = (ctypes.c_uint32 * COLUMNS)()
        self._values = (ctypes.c_uint64 * COLUMNS)()

    def read(self, slot: int, raw: bool = False) -> dict[int, int]:
        """syscall nr -> count, zero counts left out (`raw`: column -> count)."""
        count = ctypes.c_uint32(COLUMNS)
        cursor = ctypes.c_uint32(slot * COLUMNS - 1)
        out = ctypes.c_uint32(0)
        rc = self._lib.bpf_lookup_batch(
            self._fd,
            ctypes.byref(cursor) if slot else None,
            ctypes.byref(out),
            self._keys,
            self._values,
            ctypes.byref(count),
        )
        # The last row ends the map: ENOENT with a full count is success.
        error = _errno(rc)
        if (error and error != errno.ENOENT) or count.value != COLUMNS:
            raise BackendError(f"reading counter row {slot}: {os.strerror(error)}")
        return {
            column if raw or column != COLUMNS - 1 else OTHER_SYSCALL: total
            for column, total in enumerate(self._values)
            if total
        }

    def write(self, slot: int, counts: dict[int, int]) -> None:
        """Set a row to `counts` (syscall nr -> count, as read() gives them)."""
        for column in range(COLUMNS):
            self._keys[column] = slot * COLUMNS + column
            self._values[column] = 0
        for nr, n in counts.items():
            self._values[COLUMNS - 1 if nr == OTHER_SYSCALL else nr] = n
        count = ctypes.c_uint32(COLUMNS)
        rc = self._lib.bpf_update_batch(self._fd, self._keys, self._values, ctypes.byref(count))
        if error := _errno(rc):
            raise BackendError(f"writing counter row {slot}: {os.strerror(error)}")

    def zero(self, slot: int) -> None:
        for column in range(COLUMNS):
            self._keys[column] = slot * COLUMNS + column
        ctypes.memset(self._values, 0, ctypes.sizeof(self._values))
        count = ctypes.c_uint32(COLUMNS)
        rc = self._lib.bpf_update_batch(self._fd, self._keys, self._values, ctypes.byref(count))
        if error := _errno(rc):
            raise BackendError(f"zeroing counter row {slot}: {os.strerror(error)}")


class BccTables:
    """rows.Tables over the loaded program's maps, through libbcc's map calls so
    that each write returns its errno."""

    def __init__(self, bpf: Any, rows: CounterRows, handles: CgroupHandles) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self._traced = bpf[b"traced"]
        self._fd = self._traced.map_fd
        self._queue_fd = bpf[b"free_slots"].map_fd
        self._owner_fd = bpf[b"row_owner"].map_fd
        self._removed_fd = bpf[b"removed"].map_fd
        self._inserts_fd = bpf[b"traced_gen"].map_fd
        self._rows = rows
        self._handles = handles

    def get(self, cgroup_id: int) -> Entry | None:
        value = TracedCgroup()
        rc = self._lib.bpf_lookup_elem(self._fd, ctypes.byref(ctypes.c_uint64(cgroup_id)),
                                       ctypes.byref(value))
        return None if rc < 0 else _entry(value)

    def _write(self, cgroup_id: int, entry: Entry, flags: int) -> int:
        value = TracedCgroup(entry.mask, entry.slot, entry.open_prefixes, entry.connect_ports,
                             entry.flags, 0)
        key = ctypes.c_uint64(cgroup_id)
        return _errno(self._lib.bpf_update_elem(self._fd, ctypes.byref(key),
                                                ctypes.byref(value), flags))

    def insert(self, cgroup_id: int, entry: Entry) -> int:
        error = self._write(cgroup_id, entry, BPF_NOEXIST)
        if not error:
            self._inserted()
        return error

    def _inserted(self) -> None:
        """Move `traced_gen` after an insert: sys_enter forgets the cgroups it found
        untraced (podtrace.c, its membership cache), so this one is traced from its next
        syscall. This process is its only writer: a read and a write suffice."""
        key, value = ctypes.c_uint32(0), ctypes.c_uint64()
        self._lib.bpf_lookup_elem(self._inserts_fd, ctypes.byref(key), ctypes.byref(value))
        value.value += 1
        self._lib.bpf_update_elem(self._inserts_fd, ctypes.byref(key), ctypes.byref(value),
                                  BPF_ANY)

    def update(self, cgroup_id: int, entry: Entry) -> int:
        return self._write(cgroup_id, entry, BPF_EXIST)

    def delete(self, cgroup_id: int) -> int:
        key = ctypes.c_uint64(cgroup_id)
        return _errno(self._lib.bpf_delete_elem(self._fd, ctypes.byref(key)))

    def entries(self) -> dict[int, Entry]:
        return {key.value: _entry(value) for key, value in self._traced.items()}

    def pop_row(self) -> int | None:
        row = ctypes.c_uint32()
        if self._lib.bpf_lookup_and_delete(self._queue_fd, None, ctypes.byref(row)) < 0:
            return None
        return row.value

    def push_row(self, row: int) -> int:
        value = ctypes.c_uint32(row)
        return _errno(self._lib.bpf_update_elem(self._queue_fd, None, ctypes.byref(value),
                                                BPF_ANY))

    def set_owner(self, row: int, cgroup_id: int) -> int:
        key, value = ctypes.c_uint32(row), ctypes.c_uint64(cgroup_id)
        return _errno(self._lib.bpf_update_elem(self._owner_fd, ctypes.byref(key),
                                                ctypes.byref(value), BPF_ANY))

    def owners(self) -> dict[int, int]:
        """row -> owner cgroup id, for audits."""
        value = ctypes.c_uint64()
        result = {}
        for row in range(self._traced.max_entries):
            key = ctypes.c_uint32(row)
            if self._lib.bpf_lookup_elem(self._owner_fd, ctypes.byref(key),
                                         ctypes.byref(value)) == 0:
                result[row] = value.value
        return result

    def read_row(self, row: int) -> dict[int, int]:
        return self._rows.read(row)

    def zero_row(self, row: int) -> None:
        self._rows.zero(row)

    def removed(self, cgroup_id: int) -> bool:
        value = ctypes.c_uint64()
        key = ctypes.c_uint64(cgroup_id)
        return self._lib.bpf_lookup_elem(self._removed_fd, ctypes.byref(key),
                                         ctypes.byref(value)) == 0

    def alive(self, cgroup_id: int) -> bool:
        return self._handles.alive(cgroup_id)


ORPHAN_RECHECK_S = 0.05


@dataclass
class Resume:
    """What a pinned backend found at start (for logs, stats and tests)."""

    layout: str = ""
    found: bool = False  # pinned maps of this layout existed: their counts go on
    adopted: bool = False  # and their programs were still attached
    starts: int = 0  # agents that started on these maps, this one included
    entries: int = 0  # traced cgroups found in them
    orphaned_rows: int = 0  # rows a killed agent left in its quarantine, freed
    stale: list[str] = field(default_factory=list)  # other layouts' pins, removed
    problems: list[str] = field(default_factory=list)
    reported: str = ""  # node agent: where its counts went on from (resume_from)
    replayed_bytes: int = 0  # of ring buffer records the killed agent had read


@dataclass(frozen=True)
class Capture:
    """Counts given out (cgroup -> its row, absolute counts) and the ring buffer's
    consumer position, when a status was built from them."""

    rows: dict[int, tuple[int, dict[int, int]]]
    consumer_pos: int


class RingPositions:
    """The ring buffer's consumer and producer positions (the map's first two
    pages, mmap'd as libbpf does): read for snapshots, the consumer moved back
    on resume so that records read by a killed agent are read again."""

    def __init__(self, fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.size = size
        self._consumer = mmap.mmap(fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)

    def consumer(self) -> int:
        return int.from_bytes(self._consumer[:8], "little")

    def producer(self) -> int:
        return int.from_bytes(self._producer[:8], "little")

    def rewind(self, pos: int) -> int:
        """Move the consumer back to `pos` when every record since is still in the
        buffer (the producer has not gone a whole buffer past it); bytes to re-read."""
        now = self.consumer()
        if not 0 <= pos <= now or self.producer() - pos > self.size:
            return 0
        self._consumer[:8] = pos.to_bytes(8, "little")
        return now - pos


def _unattached(bpf_class: Any) -> Any:
    """BCC's BPF without its automatic attachment of TRACEPOINT_PROBE and
    RAW_TRACEPOINT_PROBE functions: a pinned backend attaches them with links."""

    class Unattached(bpf_class):  # type: ignore[misc, valid-type]
        def _trace_autoload(self) -> None:
            pass

    return Unattached


def _bits(mask: int) -> list[int]:
    """
    >>> _bits(0b1010)
    [1, 3]
    """
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _describe_stale(directory: Path) -> str:
    """What another layout's pins held, read through what every layout shares
    (the `header` array, the `traced` map's u64 keys): said, then removed."""
    traced = 0
    with contextlib.suppress(OSError):
        fd = pins.obj_get(directory / "traced")
        try:
            traced = _count_keys(fd)
        finally:
            os.close(fd)
    return (f"pins of another program layout ({directory.name}, {traced} traced cgroups) "
            "removed: what they counted since the last report is lost")


def _count_keys(fd: int) -> int:
    from bcc.libbcc import lib

    key, following = ctypes.c_uint64(), ctypes.c_uint64()
    count = 0
    if lib.bpf_get_first_key(fd, ctypes.byref(key), ctypes.sizeof(key)) < 0:
        return 0
    while True:
        count += 1
        if lib.bpf_get_next_key(fd, ctypes.byref(key), ctypes.byref(following)) < 0:
            return count
        key.value = following.value


def _entry(value: TracedCgroup) -> Entry:
    return Entry(value.mask, value.slot, value.open_prefixes, value.connect_ports, value.flags)


class BccBackend:
    """The eBPF backend (see the module docstring and bpf/podtrace.c)."""

    name = "bcc"
    limits = SourceLimits(
        open_prefix_bytes=C["PREFIX_MAX"],
        open_prefixes=C["MAX_PREFIXES"],
        connect_ports=C["MAX_PORTS"],
        exec_filename_bytes=C["MAX_FILENAME"] - 1,
    )

    def __init__(
        self,
        kubepods: KubepodsRootLike,
        options: BackendOptions | None = None,
        *,
        ringbuf_pages: int = 256,
        use_btf: bool = True,
        pin_dir: Path | None = None,
        allow_mount: bool = True,
        reported: bool = False,
    ) -> None:
        self.kubepods = kubepods
        self.options = options or BackendOptions()
        self.ringbuf_pages = ringbuf_pages
        # The instance's pin directory (pins.py); None: nothing outlives the agent.
        self.pin_dir = pin_dir
        self.allow_mount = allow_mount
        self.resume = Resume()
        self._lock: pins.InstanceLock | None = None
        self._layout_dir: Path | None = None
        # The node agent's mode (snapshot, resume_from): a resumed backend holds its
        # events and counts until told what the apiserver has of them.
        self.reported = reported
        self._held = False
        self._base: dict[int, dict[int, int]] = {}  # cgroup → counts reported before
        self._last_abs: dict[int, tuple[int, dict[int, int]]] = {}  # cgroup → row, counts
        self._good_slot = 1  # the slot of the last snapshot whose write went through
        self._ring: RingPositions | None = None
        self._bpf: Any = None
        self._book: RowBook | None = None
        self._handles: CgroupHandles | None = None
        self._pending: list[Event] = []
        self._markers: dict[int, dict[int, int]] = {}  # cgroup → counts at its marker
        self._seen = 0
        self._prefixes = SharedValues[str](C["MAX_PREFIXES"])
        self._ports = SharedValues[int](C["MAX_PORTS"])
        self._last_sweep = 0.0
        self._dropped_at_sweep = 0
        # Without BTF: no ppid, no exit code, the classic sys_enter tracepoint.
        self.use_btf = use_btf

    # -- setup --------------------------------------------------------------

    def cflags(self) -> list[str]:
        """The cflags for this kernel (BTF offsets when the kernel has BTF)."""
        offsets: dict[str, int] = {}
        if self.use_btf:
            try:
                offsets = btf.program_offsets(btf.VMLINUX.read_bytes())
            except (OSError, btf.BtfError):
                offsets = {}
        try:
            group_dead = "group_dead" in event_fields(find_tracefs(), "sched/sched_process_exit")
        except (OSError, TracefsError):
            group_dead = False
        return program_cflags(
            self.kubepods,
            self.options,
            ringbuf_pages=self.ringbuf_pages,
            syscalls={n: number_of(n) for n in ("open", "openat", "connect", "prctl")},
            offsets=offsets,
            exit_has_group_dead=group_dead,
        )

    def start(self) -> None:
        try:
            from bcc import BPF
        except ImportError as err:
            raise BackendError(f"BCC's Python module is missing (python3-bpfcc): {err}") from err
        try:
            handles = CgroupHandles(self.kubepods.cgroup2)
        except OSError as err:
            raise BackendError(f"opening the cgroup2 mount {self.kubepods.cgroup2}: {err}") from err
        if error := handles.resolve(self.kubepods.cgroup_id):
            handles.close()
            raise BackendError(
                f"cgroup ids do not resolve on {self.kubepods.cgroup2} (open_by_handle_at: "
                f"{os.strerror(error)}): the agent needs CAP_DAC_READ_SEARCH"
            )
        self._handles = handles
        cflags = self.cflags()
        layout_dir = self._pin_layout(cflags)
        if layout_dir is not None:
            cflags.append(f'-DPIN_DIR="{layout_dir}"')
            if self.reported:
                cflags.append("-DREPORTED_SLOTS")
        try:
            # Unpinned, tracepoints attach while BPF() returns: a container cgroup
            # made in the instant before the queue is filled is reported untraced.
            bpf_class = BPF if layout_dir is None else _unattached(BPF)
            self._bpf = bpf_class(src_file=str(PROGRAM).encode(), cflags=cflags)
            if layout_dir is not None:
                self.resume.adopted = self._attach_pinned(layout_dir)
        except Exception as err:
            self.close()
            raise BackendError(f"compiling or loading {PROGRAM.name} failed: {err}") from err
        rows = CounterRows(self._table("counts").map_fd)
        tables = BccTables(self._bpf, rows, handles)
        self._book = RowBook(tables, self.options.max_traced, self._release_filters)
        header = self._table("header")
        if header[ctypes.c_int(C["HEADER_READY"])].value:
            self._resume_book(tables)
        else:
            for row in range(self.options.max_traced):
                if error := tables.push_row(row):
                    self.close()
                    raise BackendError(f"filling free_slots: {os.strerror(error)}")
            header[ctypes.c_int(C["HEADER_READY"])] = ctypes.c_uint64(1)
        starts = header[ctypes.c_int(C["HEADER_STARTS"])].value + 1
        header[ctypes.c_int(C["HEADER_STARTS"])] = ctypes.c_uint64(starts)
        self.resume.starts = starts
        self._table("events").open_ring_buffer(self._on_record)
        if self.reported and layout_dir is not None:
            self._ring = RingPositions(self._table("events").map_fd,
                                       self.ringbuf_pages * mmap.PAGESIZE)
            self._held = self.resume.found

    # -- pins (pins.py) -----------------------------------------------------

    def _pin_layout(self, cflags: list[str]) -> Path | None:
        """The layout directory to pin into, after removing other layouts' pins;
        None when this backend does not pin (no pin_dir, or another agent holds
        the instance: that one keeps it, this one runs unpinned, as before)."""
        if self.pin_dir is None:
            return None
        try:
            pins.ensure_bpffs(self.allow_mount)
            self._lock = pins.InstanceLock(self.pin_dir)
        except pins.PinError as err:
            self.resume.problems.append(f"not pinned, a restart loses what was counted: {err}")
            log.warning("%s", self.resume.problems[-1])
            return None
        sources = [p.read_bytes() for p in sorted(BPF_DIR.glob("*.[ch]"))]
        layout = pins.layout_id(sources, [*cflags, *(["-DREPORTED_SLOTS"] if self.reported
                                                      else [])])
        for stale in pins.stale_layouts(self.pin_dir, layout):
            self.resume.stale.append(_describe_stale(stale))
            pins.remove(stale)
        self._layout_dir = self.pin_dir / layout
        self._layout_dir.mkdir(exist_ok=True)
        self.resume.layout = layout
        self.resume.found = (self._layout_dir / "header").exists()
        return self._layout_dir

    def _attach_pinned(self, layout_dir: Path) -> bool:
        """Attach every program with a pinned link; True when the links of a
        previous agent of this layout were all there (its programs go on: nothing
        is attached twice and nothing goes uncounted in between). Links left
        half-made by an agent killed while attaching are replaced."""
        from bcc import BPF
        from bcc.libbcc import lib

        functions = [lib.bpf_function_name(self._bpf.module, i).decode()
                     for i in range(lib.bpf_num_functions(self._bpf.module))]
        probes = [f for f in functions if f.startswith(("tracepoint__", "raw_tracepoint__"))]
        found = pins.links(layout_dir)
        if found and set(found) == set(probes):
            return True
        for path in found.values():
            path.unlink()
        tracefs = find_tracefs()
        for name in probes:
            if name.startswith("raw_tracepoint__"):
                fn = self._bpf.load_func(name.encode(), BPF.RAW_TRACEPOINT)
                fd = lib.bpf_attach_raw_tracepoint(fn.fd, name.removeprefix("raw_tracepoint__")
                                                   .encode())
                if fd < 0:
                    raise BackendError(f"attaching {name}: {os.strerror(_errno(fd))}")
            else:
                fn = self._bpf.load_func(name.encode(), BPF.TRACEPOINT)
                _, category, event = name.split("__", 2)
                fd = pins.link_tracepoint(fn.fd, tracefs, category, event)
            pins.pin_link(fd, layout_dir / f"{pins.LINK_PREFIX}{name}")
        return False

    def _resume_book(self, tables: BccTables) -> None:
        """Take over a previous agent's rows and filter references: rows it left
        in its quarantine (orphaned twice, a moment apart: see orphaned_rows) are
        zeroed and freed; the entries' filter bits hold references again."""
        entries = tables.entries()
        first = orphaned_rows(entries, tables.owners())
        time.sleep(ORPHAN_RECHECK_S)
        entries = tables.entries()
        orphans = first & orphaned_rows(entries, tables.owners())
        self.book.adopt_quarantined(orphans)
        self.resume.orphaned_rows = len(orphans)
        self.resume.entries = len(entries)
        prefixes, ports = self._table("open_prefix"), self._table("connect_port")
        for entry in entries.values():
            for index in _bits(entry.open_prefixes):
                value = prefixes[ctypes.c_int(index)]
                self._prefixes.adopt(index, value.str[: value.len].decode())
            for index in _bits(entry.connect_ports):
                self._ports.adopt(index, int(ports[ctypes.c_int(index)].value))

    # -- what the node agent reported (its restart goes on from there) -----------

    def capture(self) -> Capture:
        """What the counts given out last and the events consumed so far add up to:
        taken when a status is built from them."""
        pos = self._ring.consumer() if self._ring is not None else 0
        return Capture(dict(self._last_abs), pos)

    def snapshot(self, capture: Capture, tag: int) -> int:
        """Keep `capture` in the pinned slot that does not hold the last status
        written (`tag`: that status's lastHeartbeatTime in microseconds), just before
        the status is written; `committed(slot)` once it was. May run on another
        thread than the loop: it writes only the slot's maps."""
        if self._bpf is None or self._ring is None:
            return -1
        slot = 1 - self._good_slot
        rows, owners = self._table(f"reported_{slot}"), self._table(f"reported_owner_{slot}")
        header = self._table("header")
        header[ctypes.c_int(C[f"HEADER_TAG_{slot}"])] = ctypes.c_uint64(0)  # being written
        owner_of = {row: cgroup_id for cgroup_id, (row, _) in capture.rows.items()}
        for row in range(self.options.max_traced):
            owners[ctypes.c_int(row)] = ctypes.c_uint64(owner_of.get(row, 0))
        writer = CounterRows(rows.map_fd)
        for row, counts in capture.rows.values():
            writer.write(row, counts)
        header[ctypes.c_int(C[f"HEADER_POS_{slot}"])] = ctypes.c_uint64(capture.consumer_pos)
        header[ctypes.c_int(C[f"HEADER_TAG_{slot}"])] = ctypes.c_uint64(tag)
        return slot

    def committed(self, slot: int) -> None:
        """The status of that snapshot was written."""
        if slot >= 0:
            self._good_slot = slot

    def resume_from(self, tag: int | None) -> None:
        """Told what status the apiserver holds (its lastHeartbeatTime in
        microseconds; None: none): counts go on from that status's snapshot, and
        events from the ring buffer position it was built at, so what the killed
        agent saw after it is seen again. Releases the events and counts held."""
        if not self._held:
            return
        self._held = False
        header = self._table("header")
        slots = [s for s in (0, 1) if tag and header[ctypes.c_int(C[f"HEADER_TAG_{s}"])].value
                 == tag]
        if not slots:
            self.resume.reported = "no status of the last agent" if tag is None else \
                "the last status written is not among the snapshots: counted from the start"
            return
        slot = slots[0]
        self._good_slot = slot
        owners, rows = self._table(f"reported_owner_{slot}"), CounterRows(
            self._table(f"reported_{slot}").map_fd)
        for cgroup_id, entry in self.book.tables.entries().items():
            if owners[ctypes.c_int(entry.slot)].value == cgroup_id:
                self._base[cgroup_id] = rows.read(entry.slot, raw=True)
        pos = header[ctypes.c_int(C[f"HEADER_POS_{slot}"])].value
        replay = self._ring.rewind(pos) if self._ring is not None else 0
        self.resume.reported = (f"counting on from the status of {tag} (slot {slot}, "
                                f"{len(self._base)} cgroups, {replay} ring buffer bytes read "
                                "again)")
        self.resume.replayed_bytes = replay

    def _based(self, cgroup_id: int, counts: dict[int, int]) -> dict[int, int]:
        base = self._base.get(cgroup_id)
        if not base:
            return counts
        return {nr: n - base.get(nr, 0) for nr, n in counts.items() if n > base.get(nr, 0)}

    def unpin(self) -> None:
        """Remove this instance's pins (uninstall, or a standalone trace that
        ended): its programs detach and its maps are freed once closed."""
        if self._layout_dir is not None:
            pins.remove(self._layout_dir)
            self._layout_dir = None
        if self.pin_dir is not None and self._lock is not None:
            pins.remove_tree(self.pin_dir)

    def _table(self, name: str) -> Any:
        if self._bpf is None:
            raise BackendError("backend not started")
        return self._bpf[name.encode()]  # BCC wants bytes names

    @property
    def book(self) -> RowBook:
        """The entries and rows (rows.py); tests audit them."""
        if self._book is None:
            raise BackendError("backend not started")
        return self._book

    # -- tracing ------------------------------------------------------------

    def trace(
        self,
        cgroup_id: int,
        path: str,
        mask: Probe,
        open_prefixes: tuple[str, ...] = (),
        connect_ports: tuple[int, ...] = (),
    ) -> None:
        if below_kubepods(self.kubepods, path) is None:
            raise BackendError(f"{path} is not below {self.kubepods.path}")
        book = self.book
        prefix_bits = self._acquire_prefixes(open_prefixes)
        try:
            port_bits = self._acquire_ports(connect_ports)
        except BaseException:
            self._prefixes.release(prefix_bits)
            raise
        book.trace(cgroup_id, int(mask), prefix_bits, port_bits)

    def untrace(self, cgroup_id: int) -> None:
        self.book.untrace(cgroup_id)
        self._base.pop(cgroup_id, None)
        self._markers.pop(cgroup_id, None)  # its counts start over if traced again

    def _acquire_prefixes(self, prefixes: tuple[str, ...]) -> int:
        limit = C["PREFIX_MAX"]
        if too_long := [p for p in prefixes if len(p.encode()) > limit]:
            raise BackendError(f"open prefixes longer than {limit} bytes: {too_long}")
        bits, placed = self._prefixes.acquire(prefixes)
        try:
            table = self._table("open_prefix")
            for index, value in placed:
                raw = value.encode()
                table[ctypes.c_uint32(index)] = OpenPrefix(len(raw), raw)
        except BaseException:
            self._prefixes.release(bits)
            raise
        return bits

    def _acquire_ports(self, ports: tuple[int, ...]) -> int:
        if bad := [p for p in ports if not 0 < p < 65536]:
            raise BackendError(f"not TCP/UDP ports: {bad}")
        bits, placed = self._ports.acquire(ports)
        try:
            table = self._table("connect_port")
            for index, value in placed:
                table[ctypes.c_uint32(index)] = ctypes.c_uint32(value)
        except BaseException:
            self._ports.release(bits)
            raise
        return bits

    def _release_filters(self, prefix_bits: int, port_bits: int) -> None:
        self._prefixes.release(prefix_bits)
        self._ports.release(port_bits)

    # -- results ------------------------------------------------------------

    def _on_record(self, _ctx: Any, data: Any, size: int) -> None:
        raw = ctypes.string_at(data, size)
        if (marker := decode_marker(raw)) is not None:
            self._seen += 1
            # runc makes one; the first wins. A marker read again after a resume holds the
            # counter row as it was then: counted on from the same base as the counts.
            self._markers.setdefault(marker[0], self._based(marker[0], marker[1]))
            return
        event = decode(raw, self.kubepods.root_path)
        if event is not None:
            self._seen += 1
            self._pending.append(event)

    def poll(self, timeout: float) -> list[Event]:
        bpf = self._bpf
        if bpf is None:
            raise BackendError("backend not started")
        book = self.book
        if self._held:  # until resume_from(): nothing is consumed
            time.sleep(min(timeout, 0.25))
            return []
        if not self._pending:
            bpf.ring_buffer_poll(max(0, int(timeout * 1000)))
        bpf.ring_buffer_consume()
        events, self._pending = self._pending, []
        for event in events:
            if isinstance(event, CgroupEvent) and event.kind == "rmdir":
                book.reclaim_quietly(event.cgroup_id, "event")
        since = time.monotonic() - self._last_sweep
        dropped = self._dropped()
        if since > SWEEP_INTERVAL_S or (dropped != self._dropped_at_sweep and since > LOSS_SWEEP_S):
            book.sweep()
            self._last_sweep, self._dropped_at_sweep = time.monotonic(), dropped
        book.release_due()
        return events

    def _dropped(self) -> int:
        return self._stat(C["STAT_RINGBUF_FULL"])

    def _stat(self, index: int) -> int:
        return int(self._table("stats")[ctypes.c_uint32(index)].value)

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        book = self.book
        if self._held:
            return {}
        read = {
            cgroup_id: (entry.slot, book.tables.read_row(entry.slot))
            for cgroup_id, entry in book.tables.entries().items()
            if entry.mask & Probe.SYSCALLS
        }
        self._last_abs = read
        result = {cgroup_id: self._based(cgroup_id, counts)
                  for cgroup_id, (_, counts) in read.items()}
        for cgroup_id, final in book.retired.items():
            result[cgroup_id] = self._based(cgroup_id, final)
            self._base.pop(cgroup_id, None)
        book.retired = {}
        return result

    def markers(self) -> dict[int, dict[int, int]]:
        """Markers of the cgroups traced now, and once more of those gone since."""
        traced = self.book.tables.entries()
        result = dict(self._markers)
        self._markers = {c: m for c, m in self._markers.items() if c in traced}
        return result

    def stats(self) -> BackendStats:
        per_stat = [self._stat(i) for i in range(C["NR_STATS"])]
        traced = len(self._table("traced"))
        capacity = self.options.max_traced
        return BackendStats(
            events_seen=self._seen,
            events_dropped=per_stat[C["STAT_RINGBUF_FULL"]],
            maps=[
                MapStat("traced", traced, capacity),
                MapStat("counts", traced + len(self.book.quarantined), capacity),
                MapStat("open_prefix", self._prefixes.used, C["MAX_PREFIXES"]),
                MapStat("connect_port", self._ports.used, C["MAX_PORTS"]),
            ],
            untraced_for_capacity=per_stat[C["STAT_NO_SLOT"]] + per_stat[C["STAT_TRACED_FULL"]],
        )

    def map_memory(self) -> list[MapMemory]:
        """Every map of the loaded program with the memory the kernel charges
        for it (fdinfo `memlock`), for tests and bench/."""
        from bcc.libbcc import lib

        if self._bpf is None:
            raise BackendError("backend not started")
        module = self._bpf.module
        lib.bpf_num_tables.restype = ctypes.c_size_t
        lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
        lib.bpf_table_name.restype = ctypes.c_char_p
        lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        result = []
        for index in range(lib.bpf_num_tables(module)):
            name = lib.bpf_table_name(module, index)
            fd = lib.bpf_table_fd(module, name)
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
            if (memory := parse_fdinfo(name.decode(), text)) is not None:
                result.append(memory)
        return result

    def kernel_stats(self) -> dict[str, int]:
        """The `stats` array by name (STAT_* of events.h)."""
        return {
            name.removeprefix("STAT_").lower(): self._stat(index)
            for name, index in C.items()
            if name.startswith("STAT_")
        }

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        self._book = None
        if self._handles is not None:
            self._handles.close()
            self._handles = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
