"""The ftrace backend: the Backend interface without eBPF.

Per traced cgroup an ftrace instance `podtrace-<pid>-<n>-<cgroup id>` (pid
of the agent, n counts backends within it) whose
`set_event_pid` holds the cgroup's threads (from cgroup.threads) and, with
options/event-fork, every task they fork; events raw_syscalls/sys_enter
(counted by id), sched/sched_process_{exec,exit,fork}. One more instance,
`podtrace-<pid>-<n>-watch`, carries cgroup/cgroup_{mkdir,rmdir,attach_task}
filtered to cgroup2 paths below kubepods: new containers are noticed from the
kernel's own events, and a task moved into a traced cgroup (runc init,
`kubectl exec`) joins its pid filter.

One reader thread polls every instance's trace_pipe (buffer_percent=0 so poll
wakes on any data) and parses the text (parse.py).

Limits, all inherent to ftrace:
- a task runs untraced between its attach to a cgroup and the reader adding
  its pid (runc's create/start split hides this for a container's first
  process: it waits in the cgroup until `start`);
- syscall counts come through the ring buffer, so they can be lost: every
  lost event is counted (per-CPU overrun + dropped events) in stats(), per
  traced cgroup too (`BackendStats.lost`), so its counts can be marked
  incomplete;
- uid and ppid come from /proc (when a pid joins) and from fork events;
- OPEN and CONNECT are not supported (syscall events give user pointers,
  not strings): those probe bits are ignored;
- a task moved out of a traced cgroup stays in its pid filter until it exits.

The workload marker (backend.WorkloadMarker): the first sys_enter of prctl with
PR_GET_PDEATHSIG by a task whose comm (as the event recorded it) is runc's init
snapshots the cgroup's counts; markers() hands them out.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import queue
import select
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

from ..backend import (
    RUNC_MARKER,
    BackendError,
    BackendOptions,
    BackendStats,
    CapacityError,
    CgroupEvent,
    Event,
    ExecEvent,
    ExitEvent,
    KubepodsRootLike,
    MapStat,
    SourceLimits,
    below_kubepods,
    kubepods_absolute,
    mount_relative,
)
from ..kubepods import is_container_cgroup
from . import parse
from .tracefs import Instance, TracefsError, find_tracefs, instances

PREFIX = "podtrace-"
RUNTIME_REEXEC = "/proc/self/exe"  # runc (and crun) re-exec themselves to set a container up
_backend_numbers = itertools.count()
READ_SIZE = 1 << 16
POLL_MS = 50
RETIRED_LOST_KEPT = 1024  # removed cgroups whose lost events stats() still reports


@dataclass
class _Traced:
    """One traced cgroup and its instance."""

    cgroup_id: int
    path: str
    mask: Probe
    instance: Instance
    fd: int | None = None
    pending: bytes = b""
    enabled: bool = False
    counts: dict[int, int] = field(default_factory=dict)
    marker: dict[int, int] | None = None  # counts at the runtime's marker (backend.markers)
    from_start: bool = False  # traced since its mkdir: its first tasks are the runtime's
    workload_exec: bool = False  # a task of it executed something but the runtime itself


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FtraceBackend:
    """See the module docstring."""

    name = "ftrace"
    # Opens and connects are not traced (see above): nothing to bound.
    limits = SourceLimits()

    def __init__(
        self,
        kubepods: KubepodsRootLike,
        options: BackendOptions | None = None,
        *,
        tracefs: Path | None = None,
        buffer_size_kb: int = 4096,
        watch_buffer_kb: int = 256,
    ) -> None:
        self.kubepods = kubepods
        self.options = options or BackendOptions()
        self.buffer_size_kb = buffer_size_kb
        self.watch_buffer_kb = watch_buffer_kb
        self._tracefs = tracefs
        # Tracepoints write absolute paths, also inside a cgroup namespace.
        self._kubepods_path = kubepods_absolute(kubepods)
        self._prefix = f"{PREFIX}{os.getpid()}-{next(_backend_numbers)}-"
        self._lock = threading.RLock()
        self._traced: dict[int, _Traced] = {}
        self._by_fd: dict[int, _Traced | None] = {}  # None: the watcher
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._retired: dict[int, dict[int, int]] = {}
        self._retired_markers: dict[int, dict[int, int]] = {}
        self._procs: dict[int, tuple[int | None, int | None]] = {}  # tgid -> (ppid, uid)
        self._exit_codes: dict[int, int] = {}  # tgid -> exit(_group) argument
        self._seen = 0
        self._lost_retired = 0
        self._retired_lost: OrderedDict[int, int] = OrderedDict()  # cgroup → lost, gone ones
        self._watch: Instance | None = None
        self._watch_fd: int | None = None
        self._watch_pending = b""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._exit_nrs = {n for n in (number_of("exit"), number_of("exit_group")) if n is not None}
        self._marker_nr = number_of(RUNC_MARKER.syscall)

    # -- setup --------------------------------------------------------------

    @property
    def tracefs(self) -> Path:
        if self._tracefs is None:
            self._tracefs = find_tracefs()
        return self._tracefs

    def start(self) -> None:
        tracefs = self.tracefs
        self.remove_stale(tracefs)
        watch = Instance(tracefs, self._prefix + "watch")
        try:
            watch.create()
            watch.set("buffer_size_kb", str(self.watch_buffer_kb))
            watch.set("buffer_percent", "0")
            under = f'"{self._kubepods_path}/*"'
            watch.enable("cgroup/cgroup_mkdir", f"root == 0 && path ~ {under}")
            watch.enable("cgroup/cgroup_rmdir", f"root == 0 && path ~ {under}")
            watch.enable("cgroup/cgroup_attach_task", f"dst_root == 0 && dst_path ~ {under}")
            self._watch_fd = os.open(watch.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            with contextlib.suppress(OSError):
                watch.remove()
            raise BackendError(f"cannot set up the ftrace watcher instance: {err}") from err
        self._watch = watch
        self._by_fd[self._watch_fd] = None
        self._thread = threading.Thread(target=self._run, name="podtrace-ftrace", daemon=True)
        self._thread.start()

    @staticmethod
    def remove_stale(tracefs: Path) -> list[str]:
        """Remove podtrace-<pid>-* instances whose agent process is gone."""
        removed = []
        for instance in instances(tracefs, PREFIX):
            owner = instance.name[len(PREFIX) :].split("-", 1)[0]
            if owner.isdigit() and not _alive(int(owner)):
                with contextlib.suppress(OSError):
                    instance.remove()
                    removed.append(instance.name)
        return removed

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
        rel = path.strip("/")
        with self._lock:
            traced = self._traced.get(cgroup_id)
            if traced is None:
                traced = self._create(cgroup_id, rel, mask)
            else:
                traced.mask = mask
                if traced.enabled:
                    self._enable_events(traced)
            self._add_pids(traced, self._cgroup_threads(rel))

    def untrace(self, cgroup_id: int) -> None:
        with self._lock:
            traced = self._traced.pop(cgroup_id, None)
            if traced is not None:
                self._teardown(traced, keep_counts=False)

    def _create(self, cgroup_id: int, rel: str, mask: Probe) -> _Traced:
        if len(self._traced) >= self.options.max_traced:
            raise CapacityError(f"already {len(self._traced)} ftrace instances")
        instance = Instance(self.tracefs, f"{self._prefix}{cgroup_id}")
        traced = _Traced(cgroup_id, rel, mask, instance)
        try:
            instance.create()
            instance.set("buffer_size_kb", str(self.buffer_size_kb))
            instance.set("buffer_percent", "0")
            instance.set("trace_clock", "mono")  # bpf_ktime_get_ns()'s clock
            instance.set("options/record-tgid", "1")
            instance.set("options/irq-info", "0")
            instance.set("options/event-fork", "1")
            traced.fd = os.open(instance.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            with contextlib.suppress(OSError):
                instance.remove()
            raise BackendError(f"cannot create ftrace instance {instance.name}: {err}") from err
        self._traced[cgroup_id] = traced
        self._by_fd[traced.fd] = traced
        return traced

    def _enable_events(self, traced: _Traced) -> None:
        """Events for the mask. Only once the pid filter is set: an empty
        set_event_pid means every task."""
        inst, mask = traced.instance, traced.mask
        wants_process = bool(mask & (Probe.EXEC | Probe.EXIT))
        if mask & Probe.SYSCALLS:
            inst.set("events/raw_syscalls/sys_enter/filter", "0")
            inst.enable("raw_syscalls/sys_enter")
        elif mask & Probe.EXIT:
            # Only the exit code: the argument of exit/exit_group.
            inst.enable(
                "raw_syscalls/sys_enter", " || ".join(f"id == {n}" for n in self._exit_nrs)
            )
        else:
            inst.set("events/raw_syscalls/sys_enter/enable", "0")
        for event in ("sched_process_exec", "sched_process_exit", "sched_process_fork"):
            inst.set(f"events/sched/{event}/enable", "1" if wants_process else "0")
        traced.enabled = True

    def _cgroup_threads(self, rel: str) -> list[int]:
        try:
            text = (self.kubepods.cgroup2 / rel / "cgroup.threads").read_text()
        except OSError:
            return []
        return [int(tid) for tid in text.split()]

    def _add_pids(self, traced: _Traced, tids: list[int]) -> None:
        """Add threads to the pid filter, then (first time) enable events. A
        thread forked between reading cgroup.threads and the write is not in
        the filter: read again until nothing new turns up."""
        known: set[int] = set()
        while new := [t for t in tids if t not in known]:
            for tid in new:
                self._remember(tid)
            try:
                traced.instance.set("set_event_pid", " ".join(map(str, new)), append=True)
            except TracefsError as err:
                if err.errno != errno.ESRCH:
                    raise
            known.update(new)
            if not traced.enabled:
                self._enable_events(traced)
            tids = self._cgroup_threads(traced.path)

    def _remember(self, tid: int) -> None:
        try:
            ids = parse.proc_status_ids(Path(f"/proc/{tid}/status").read_text())
        except OSError:
            return
        if ids is not None:
            tgid, ppid, uid = ids
            self._procs[tgid] = (ppid, uid)

    def _teardown(self, traced: _Traced, keep_counts: bool) -> None:
        """Drain, account losses, close and remove the instance."""
        if traced.fd is not None:
            with contextlib.suppress(OSError):
                traced.instance.set("tracing_on", "0")
            self._drain(traced.fd, traced)
            with contextlib.suppress(OSError):
                lost = parse.lost_events(traced.instance.cpu_stats())
                self._lost_retired += lost
                if keep_counts:  # removed (not untraced): its last numbers stay readable
                    self._retired_lost[traced.cgroup_id] = lost
                    while len(self._retired_lost) > RETIRED_LOST_KEPT:
                        self._retired_lost.popitem(last=False)
            self._by_fd.pop(traced.fd, None)
            os.close(traced.fd)
            traced.fd = None
        if keep_counts and traced.counts:
            self._retired[traced.cgroup_id] = dict(traced.counts)
            if traced.marker is not None:
                self._retired_markers[traced.cgroup_id] = traced.marker
        with contextlib.suppress(OSError):
            traced.instance.remove()

    # -- reading ------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        while not self._stop.is_set():
            with self._lock:
                fds = set(self._by_fd)
            for fd in registered - fds:
                poller.unregister(fd)
            for fd in fds - registered:
                poller.register(fd, select.POLLIN)
            registered = fds
            poller.poll(POLL_MS)
            with self._lock:
                for fd in list(self._by_fd):
                    if fd in self._by_fd:
                        self._drain(fd, self._by_fd[fd])

    def _drain(self, fd: int, traced: _Traced | None) -> None:
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            pending = (traced.pending if traced else self._watch_pending) + data
            *lines, rest = pending.split(b"\n")
            if traced is None:
                self._watch_pending = rest
            else:
                traced.pending = rest
            for raw in lines:
                line = parse.parse_line(raw.decode("utf-8", errors="replace"))
                if line is None:
                    continue
                self._seen += 1
                if traced is None:
                    self._on_watch(line)
                else:
                    self._on_traced(traced, line)

    def _on_watch(self, line: parse.TraceLine) -> None:
        if line.event == "cgroup_attach_task":
            attached = parse.attach(line.body)
            if attached is not None and attached.pid is not None:
                traced = self._traced.get(attached.id)
                if traced is not None:
                    self._add_pids(traced, [attached.pid])
            return
        cg = parse.cgroup(line.body)
        if cg is None or line.event not in ("cgroup_mkdir", "cgroup_rmdir"):
            return
        rel = mount_relative(self.kubepods, cg.path)
        if rel is None:
            return  # the filter's glob matched outside the mount: not ours
        below = below_kubepods(self.kubepods, rel) or ""
        traced_now = False
        if line.event == "cgroup_mkdir":
            mask = self.options.auto_trace_mask
            container = is_container_cgroup(self.kubepods.path, below)
            if mask and container and cg.id not in self._traced:
                try:
                    created = self._create(cg.id, rel, mask)
                    created.from_start = True
                    self._add_pids(created, self._cgroup_threads(rel))
                    traced_now = True
                except BackendError:
                    pass
        else:
            gone = self._traced.pop(cg.id, None)
            if gone is not None:
                self._teardown(gone, keep_counts=True)
        self._events.put(
            CgroupEvent(
                kind="mkdir" if line.event == "cgroup_mkdir" else "rmdir",
                cgroup_id=cg.id,
                level=cg.level,
                path=rel,
                timestamp_ns=line.timestamp_ns,
                traced=traced_now,
            )
        )

    def _on_traced(self, traced: _Traced, line: parse.TraceLine) -> None:
        tgid = line.tgid if line.tgid is not None else line.pid
        if line.event == "sys_enter":
            call = parse.sys_enter(line.body)
            if call is None:
                return
            if traced.mask & Probe.SYSCALLS:
                if traced.marker is None and self._is_marker(traced, line, call):
                    traced.marker = dict(traced.counts)  # the marker is the workload's
                traced.counts[call.nr] = traced.counts.get(call.nr, 0) + 1
            if call.nr in self._exit_nrs and call.args:
                self._exit_codes[tgid] = call.args[0]
        elif line.event == "sched_process_fork":
            forked = parse.fork(line.body)
            if forked is not None:
                uid = self._procs.get(tgid, (None, None))[1]
                self._procs.setdefault(forked.child_pid, (tgid, uid))
        elif line.event == "sched_process_exec":
            execd = parse.exec_(line.body)
            if execd is not None and execd.filename != RUNTIME_REEXEC:
                traced.workload_exec = True
            if execd is not None and traced.mask & Probe.EXEC:
                ppid, uid = self._procs.get(execd.pid, (None, None))
                self._events.put(
                    ExecEvent(
                        cgroup_id=traced.cgroup_id,
                        pid=execd.pid,
                        ppid=ppid,
                        uid=uid,
                        comm=Path(execd.filename).name[:15],
                        filename=execd.filename,
                        timestamp_ns=line.timestamp_ns,
                    )
                )
        elif line.event == "sched_process_exit":
            self._on_exit(traced, line, tgid)

    def _is_marker(self, traced: _Traced, line: parse.TraceLine, call: parse.SysEnter) -> bool:
        """runc init's prctl(PR_GET_PDEATHSIG) (backend.WorkloadMarker). trace_pipe
        prints the comm a pid has when the line is read (the kernel's comm cache), not
        when the event was recorded: an init that exec'd meanwhile shows the workload's
        name. So in a cgroup traced since its mkdir, the first such prctl before any
        workload exec is the runtime's whatever the comm shows (runc makes one)."""
        if call.nr != self._marker_nr or not call.args or call.args[0] != RUNC_MARKER.option:
            return False
        return line.comm == RUNC_MARKER.comm or (traced.from_start and not traced.workload_exec)

    def _on_exit(self, traced: _Traced, line: parse.TraceLine, tgid: int) -> None:
        exited = parse.exit_(line.body)
        if exited is None:
            return
        last = exited.group_dead if exited.group_dead is not None else exited.pid == tgid
        if exited.pid != tgid:
            self._procs.pop(exited.pid, None)  # a thread's fork-time entry
        if not last:
            return
        ppid, uid = self._procs.pop(tgid, (None, None))
        code = self._exit_codes.pop(tgid, None)
        if traced.mask & Probe.EXIT:
            self._events.put(
                ExitEvent(
                    cgroup_id=traced.cgroup_id,
                    pid=tgid,
                    ppid=ppid,
                    uid=uid,
                    comm=exited.comm,
                    # wait(2) status of exit(code); a death by signal is not seen here.
                    exit_code=None if code is None else (code & 0xFF) << 8,
                    timestamp_ns=line.timestamp_ns,
                )
            )

    @property
    def instance_prefix(self) -> str:
        """The name prefix of this backend's instances under tracefs/instances."""
        return self._prefix

    def pid_filter(self, cgroup_id: int) -> set[int]:
        """The thread ids in the set_event_pid of `cgroup_id`'s instance (empty if
        untraced): what the backend has noticed of that cgroup so far."""
        with self._lock:
            traced = self._traced.get(cgroup_id)
            if traced is None:
                return set()
            try:
                text = (traced.instance.path / "set_event_pid").read_text()
            except OSError:
                return set()
        return {int(tid) for tid in text.split()}

    # -- results ------------------------------------------------------------

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        try:
            first = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return events
        events.append(first)
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        with self._lock:
            result = {
                cid: dict(t.counts) for cid, t in self._traced.items() if t.mask & Probe.SYSCALLS
            }
            result.update(self._retired)
            self._retired = {}
        return result

    def markers(self) -> dict[int, dict[int, int]]:
        with self._lock:
            result = {cid: dict(t.marker) for cid, t in self._traced.items()
                      if t.marker is not None}  # fmt: skip
            result.update(self._retired_markers)
            self._retired_markers = {}
        return result

    def stats(self) -> BackendStats:
        with self._lock:
            lost = self._lost_retired
            by_cgroup = dict(self._retired_lost)
            for traced in self._traced.values():
                with contextlib.suppress(OSError):
                    by_cgroup[traced.cgroup_id] = parse.lost_events(traced.instance.cpu_stats())
                    lost += by_cgroup[traced.cgroup_id]
            if self._watch is not None:
                with contextlib.suppress(OSError):
                    lost += parse.lost_events(self._watch.cpu_stats())
            return BackendStats(
                events_seen=self._seen,
                events_dropped=lost,
                maps=[MapStat("instances", len(self._traced), self.options.max_traced)],
                lost={c: n for c, n in by_cgroup.items() if n},
            )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for traced in list(self._traced.values()):
                self._teardown(traced, keep_counts=False)
            self._traced.clear()
            if self._watch_fd is not None:
                os.close(self._watch_fd)
                self._by_fd.pop(self._watch_fd, None)
                self._watch_fd = None
            if self._watch is not None:
                with contextlib.suppress(OSError):
                    self._watch.remove()
                self._watch = None
