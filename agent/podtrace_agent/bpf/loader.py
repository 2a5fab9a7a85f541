"""The bcc backend: compiles bpf/podtrace.c with knobs as cflags, programs its
maps from user space and reads events and counters back.

Counter rows: each traced cgroup owns one row of the per-CPU `counts` array
(NR_SYSCALLS_MAX columns). Free rows wait in the BPF queue `free_slots`, which
both the cgroup_mkdir hook (auto-tracing) and trace() pop from. A row goes
back to the queue only zeroed, and only after a short quarantine: a CPU that
looked the cgroup up just before its entry was deleted may still bump the row.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import Any

from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

from ..backend import (
    BackendError,
    BackendOptions,
    BackendStats,
    CapacityError,
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
from . import btf
from .tables import SharedValues
from .wire import BPF_DIR, C, OpenPrefix, TracedCgroup, decode

PROGRAM = BPF_DIR / "podtrace.c"
BPF_NOEXIST = 1
QUARANTINE_S = 0.2
SWEEP_INTERVAL_S = 5.0
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
        f"-DRINGBUF_PAGES={ringbuf_pages}",
    ]
    for name in ("open", "openat", "connect"):
        number = syscalls.get(name)
        flags.append(f"-DNR_{name.upper()}={-1 if number is None else number}")
    flags += [f"-D{macro}={value}" for macro, value in sorted(offsets.items())]
    if exit_has_group_dead:
        flags.append("-DEXIT_HAS_GROUP_DEAD")
    return flags


def _errno(rc: int) -> int:
    """The error of a libbpf call: libbpf returns -errno, older wrappers -1 and errno."""
    if rc >= 0:
        return 0
    return -rc if rc < -1 else (ctypes.get_errno() or 1)


def _possible_cpus() -> int:
    """num_possible_cpus(): per-CPU map values have one slot per possible CPU."""
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


class CounterRows:
    """Rows of the per-CPU `counts` array, read and zeroed one row per syscall
    with the map batch operations (key of the batch cursor: the previous index)."""

    def __init__(self, map_fd: int, ncpus: int) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self._fd = map_fd
        self._ncpus = ncpus
        self._keys = (ctypes.c_uint32 * COLUMNS)()
        self._values = (ctypes.c_uint64 * (COLUMNS * ncpus))()

    def read(self, slot: int) -> dict[int, int]:
        """syscall nr -> count summed over CPUs, zero counts left out."""
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
        values = self._values
        ncpus = self._ncpus
        result = {}
        for column in range(COLUMNS):
            base = column * ncpus
            total = sum(values[base : base + ncpus])
            if total:
                nr = OTHER_SYSCALL if column == COLUMNS - 1 else column
                result[nr] = total
        return result

    def zero(self, slot: int) -> None:
        for column in range(COLUMNS):
            self._keys[column] = slot * COLUMNS + column
        ctypes.memset(self._values, 0, ctypes.sizeof(self._values))
        count = ctypes.c_uint32(COLUMNS)
        rc = self._lib.bpf_update_batch(self._fd, self._keys, self._values, ctypes.byref(count))
        if error := _errno(rc):
            raise BackendError(f"zeroing counter row {slot}: {os.strerror(error)}")


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
    ) -> None:
        self.kubepods = kubepods
        self.options = options or BackendOptions()
        self.ringbuf_pages = ringbuf_pages
        self._bpf: Any = None
        self._pending: list[Event] = []
        self._seen = 0
        self._retired: dict[int, dict[int, int]] = {}
        self._quarantine: list[tuple[float, int]] = []
        self._prefixes = SharedValues[str](C["MAX_PREFIXES"])
        self._ports = SharedValues[int](C["MAX_PORTS"])
        self._last_sweep = 0.0
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
            syscalls={n: number_of(n) for n in ("open", "openat", "connect")},
            offsets=offsets,
            exit_has_group_dead=group_dead,
        )

    def start(self) -> None:
        try:
            from bcc import BPF
        except ImportError as err:
            raise BackendError(f"BCC's Python module is missing (python3-bpfcc): {err}") from err
        cflags = self.cflags()
        try:
            # Tracepoints attach while BPF() returns: a container cgroup made in
            # the instant before the queue is filled is reported untraced.
            self._bpf = BPF(src_file=str(PROGRAM).encode(), cflags=cflags)
        except Exception as err:
            raise BackendError(f"compiling or loading {PROGRAM.name} failed: {err}") from err
        free_slots = self._table("free_slots")
        for slot in range(self.options.max_traced):
            free_slots.push(ctypes.c_uint32(slot))
        counts = self._table("counts")
        self._rows = CounterRows(counts.map_fd, _possible_cpus())
        self._table("events").open_ring_buffer(self._on_record)

    def _table(self, name: str) -> Any:
        if self._bpf is None:
            raise BackendError("backend not started")
        return self._bpf[name.encode()]  # BCC wants bytes names

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
        traced = self._table("traced")
        key = ctypes.c_uint64(cgroup_id)
        prefix_bits = self._acquire_prefixes(open_prefixes)
        try:
            port_bits = self._acquire_ports(connect_ports)
        except CapacityError:
            self._prefixes.release(prefix_bits)
            raise
        entry = traced.get(key)
        if entry is not None:
            self._release_filters(entry)
            if entry.flags & C["TRACED_DEAD"]:
                self._prefixes.release(prefix_bits)
                self._ports.release(port_bits)
                self._reclaim(cgroup_id, entry)
                return
            entry.mask, entry.open_prefixes, entry.connect_ports = (
                int(mask), prefix_bits, port_bits
            )
            traced[key] = entry
            return
        slot = self._pop_slot()
        if slot is None:
            self._prefixes.release(prefix_bits)
            self._ports.release(port_bits)
            raise CapacityError(f"all {self.options.max_traced} counter rows are in use")
        entry = TracedCgroup(int(mask), slot, prefix_bits, port_bits, 0, 0)
        error = self._insert(traced, key, entry)
        if error:
            self._push_slot(slot)
            self._prefixes.release(prefix_bits)
            self._ports.release(port_bits)
            if error != errno.EEXIST:
                raise CapacityError(f"cannot trace {path}: {os.strerror(error)}")
            # The cgroup_mkdir hook got there first: keep its row, set the mask.
            self.trace(cgroup_id, path, mask, open_prefixes, connect_ports)

    def untrace(self, cgroup_id: int) -> None:
        traced = self._table("traced")
        key = ctypes.c_uint64(cgroup_id)
        entry = traced.get(key)
        if entry is None:
            return
        del traced[key]
        self._release_filters(entry)
        self._quarantine.append((time.monotonic() + QUARANTINE_S, entry.slot))

    def _acquire_prefixes(self, prefixes: tuple[str, ...]) -> int:
        limit = C["PREFIX_MAX"]
        if too_long := [p for p in prefixes if len(p.encode()) > limit]:
            raise BackendError(f"open prefixes longer than {limit} bytes: {too_long}")
        bits, placed = self._prefixes.acquire(prefixes)
        table = self._table("open_prefix")
        for index, value in placed:
            raw = value.encode()
            table[ctypes.c_uint32(index)] = OpenPrefix(len(raw), raw)
        return bits

    def _acquire_ports(self, ports: tuple[int, ...]) -> int:
        if bad := [p for p in ports if not 0 < p < 65536]:
            raise BackendError(f"not TCP/UDP ports: {bad}")
        bits, placed = self._ports.acquire(ports)
        table = self._table("connect_port")
        for index, value in placed:
            table[ctypes.c_uint32(index)] = ctypes.c_uint32(value)
        return bits

    def _release_filters(self, entry: TracedCgroup) -> None:
        self._prefixes.release(entry.open_prefixes)
        self._ports.release(entry.connect_ports)

    @staticmethod
    def _insert(table: Any, key: ctypes.c_uint64, entry: TracedCgroup) -> int:
        """Insert only if absent: 0, or the errno (EEXIST, E2BIG when full)."""
        from bcc.libbcc import lib

        rc = lib.bpf_update_elem(table.map_fd, ctypes.byref(key), ctypes.byref(entry), BPF_NOEXIST)
        return _errno(rc)

    # -- counter rows -------------------------------------------------------

    def _pop_slot(self) -> int | None:
        self._release_quarantined()
        try:
            return int(self._table("free_slots").pop().value)
        except KeyError:
            return None

    def _push_slot(self, slot: int) -> None:
        self._table("free_slots").push(ctypes.c_uint32(slot))

    def _release_quarantined(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for deadline, slot in self._quarantine:
            if force or deadline <= now:
                self._rows.zero(slot)
                self._push_slot(slot)
            else:
                keep.append((deadline, slot))
        self._quarantine = keep

    def _reclaim(self, cgroup_id: int, entry: TracedCgroup) -> None:
        """A removed cgroup: keep its final counts for one syscall_counts(), free its row."""
        final = self._rows.read(entry.slot)
        if final:
            self._retired[cgroup_id] = final
        self.untrace(cgroup_id)

    def _sweep(self) -> None:
        """Reclaim DEAD entries whose rmdir event was lost."""
        dead = C["TRACED_DEAD"]
        for key, entry in list(self._table("traced").items()):
            if entry.flags & dead:
                self._reclaim(key.value, entry)
        self._last_sweep = time.monotonic()

    # -- results ------------------------------------------------------------

    def _on_record(self, _ctx: Any, data: Any, size: int) -> None:
        event = decode(ctypes.string_at(data, size), self.kubepods.root_path)
        if event is not None:
            self._seen += 1
            self._pending.append(event)

    def poll(self, timeout: float) -> list[Event]:
        bpf = self._bpf
        if bpf is None:
            raise BackendError("backend not started")
        if not self._pending:
            bpf.ring_buffer_poll(max(0, int(timeout * 1000)))
        bpf.ring_buffer_consume()
        events, self._pending = self._pending, []
        traced = self._table("traced")
        for event in events:
            if isinstance(event, CgroupEvent) and event.kind == "rmdir":
                entry = traced.get(ctypes.c_uint64(event.cgroup_id))
                if entry is not None:
                    self._reclaim(event.cgroup_id, entry)
        if time.monotonic() - self._last_sweep > SWEEP_INTERVAL_S:
            self._sweep()
        self._release_quarantined()
        return events

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        result: dict[int, dict[int, int]] = {}
        for key, entry in self._table("traced").items():
            if entry.mask & Probe.SYSCALLS or entry.flags & C["TRACED_DEAD"]:
                result[key.value] = self._rows.read(entry.slot)
        result.update(self._retired)
        self._retired = {}
        return result

    def stats(self) -> BackendStats:
        stats = self._table("stats")
        per_stat = [sum(stats[ctypes.c_uint32(i)]) for i in range(C["NR_STATS"])]
        traced = len(self._table("traced"))
        capacity = self.options.max_traced
        return BackendStats(
            events_seen=self._seen,
            events_dropped=per_stat[C["STAT_RINGBUF_FULL"]],
            maps=[
                MapStat("traced", traced, capacity),
                MapStat("counts", traced + len(self._quarantine), capacity),
                MapStat("open_prefix", self._prefixes.used, C["MAX_PREFIXES"]),
                MapStat("connect_port", self._ports.used, C["MAX_PORTS"]),
            ],
            untraced_for_capacity=per_stat[C["STAT_NO_SLOT"]] + per_stat[C["STAT_TRACED_FULL"]],
        )

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

