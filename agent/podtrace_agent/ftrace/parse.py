"""Parsing of ftrace's text output (trace_pipe) and per-CPU stats, pure.

Why text: trace_pipe_raw hands out ring-buffer pages whose layout (page
headers, time deltas, per-event records) changes with the kernel; the text
form is stable and the kernel formats it from each event's `print fmt`.

The instance runs with options record-tgid=1 and irq-info=0 and
trace_clock=mono, so a line reads:

    <comm>-<pid> (<tgid>) [<cpu>] <sec>.<usec>: <event>: <body>

Bodies follow the `print fmt` of each event's tracefs `format` file:

    sys_enter:          NR %ld (%lx, %lx, %lx, %lx, %lx, %lx)
    sched_process_exec: filename=%s pid=%d old_pid=%d
    sched_process_exit: comm=%s pid=%d prio=%d group_dead=%s
    sched_process_fork: comm=%s pid=%d child_comm=%s child_pid=%d
    cgroup_mkdir/rmdir: root=%d id=%llu level=%d path=%s
    cgroup_attach_task: dst_root=%d dst_id=%llu dst_level=%d dst_path=%s pid=%d comm=%s

What a traced process controls lands in this text unescaped: its comm (15 bytes at
most), the filenames it executes, the names of cgroups it may create below its own.
So a line's prefix is split at the first place that fits (a body cannot move the pid
or the event), and an attach event's path ends at the first " pid=<n> comm=" that
leaves 15 characters or fewer (a comm cannot move the pid). Two things text cannot
settle: a name with a newline starts a new line of trace_pipe, and a cgroup name that
imitates " pid=<n> comm=", moved into by a task whose comm has 3 characters or fewer,
moves the pid of that attach event.
(tests/unit/test_fuzz_ftrace.py holds the properties.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(  # comm lazy: the first split that fits, never one inside the body
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>-+|\d+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<sec>\d+)\.(?P<usec>\d{6}):\s+(?P<event>\w+):\s?(?P<body>.*)$"
)
_SYS_ENTER = re.compile(r"^NR (?P<nr>-?\d+) \((?P<args>[^)]*)\)")
_EXEC = re.compile(r"^filename=(?P<filename>.*) pid=(?P<pid>\d+) old_pid=(?P<old_pid>\d+)$")
_EXIT = re.compile(
    r"^comm=(?P<comm>.*) pid=(?P<pid>\d+) prio=-?\d+(?: group_dead=(?P<dead>true|false))?$"
)
_FORK = re.compile(
    r"^comm=(?P<comm>.*) pid=(?P<pid>\d+) child_comm=(?P<child_comm>.*) child_pid=(?P<child>\d+)$"
)
_CGROUP = re.compile(
    r"^root=(?P<root>-?\d+) id=(?P<id>\d+) level=(?P<level>\d+) path=(?P<path>.*)$"
)
_ATTACH = re.compile(  # path lazy, comm at most 15 characters (TASK_COMM_LEN - 1)
    r"^dst_root=(?P<root>-?\d+) dst_id=(?P<id>\d+) dst_level=(?P<level>\d+) "
    r"dst_path=(?P<path>.*?) pid=(?P<pid>\d+) comm=(?P<comm>.{0,15})$"
)
_STAT = re.compile(r"^(?P<name>[a-z ]+):\s+(?P<value>\d+)$", re.M)


@dataclass(frozen=True)
class TraceLine:
    """One line of trace_pipe: who (comm, pid = thread id, tgid), when, what."""

    comm: str
    pid: int
    tgid: int | None
    cpu: int
    timestamp_ns: int
    event: str
    body: str


def parse_line(line: str) -> TraceLine | None:
    """A trace_pipe line, or None for anything else (e.g. "CPU:1 [LOST 3 EVENTS]").

    >>> parse_line("  true-23187 (  23187) [001]  1052.695513: sched_process_exit: "
    ...            "comm=true pid=23187 prio=120 group_dead=true").timestamp_ns
    1052695513000
    """
    match = _LINE.match(line)
    if match is None:
        return None
    tgid = match["tgid"]
    return TraceLine(
        comm=match["comm"],
        pid=int(match["pid"]),
        tgid=None if tgid is None or tgid.startswith("-") else int(tgid),
        cpu=int(match["cpu"]),
        timestamp_ns=int(match["sec"]) * 1_000_000_000 + int(match["usec"]) * 1000,
        event=match["event"],
        body=match["body"],
    )


@dataclass(frozen=True)
class SysEnter:
    nr: int
    args: tuple[int, ...]


@dataclass(frozen=True)
class Exec:
    filename: str
    pid: int
    old_pid: int


@dataclass(frozen=True)
class Exit:
    comm: str
    pid: int
    group_dead: bool | None  # None: a kernel whose format lacks group_dead


@dataclass(frozen=True)
class Fork:
    parent_pid: int
    child_pid: int
    child_comm: str


@dataclass(frozen=True)
class Cgroup:
    """cgroup_mkdir/cgroup_rmdir, and cgroup_attach_task (with `pid`)."""

    root: int
    id: int
    level: int
    path: str
    pid: int | None = None


def sys_enter(body: str) -> SysEnter | None:
    """
    >>> sys_enter("NR 231 (3, e7, 3c, 0, ffffffffffffff80, 3)").args[0]
    3
    """
    match = _SYS_ENTER.match(body)
    if match is None:
        return None
    args = tuple(int(a, 16) for a in match["args"].split(", ") if a)
    return SysEnter(int(match["nr"]), args)


def exec_(body: str) -> Exec | None:
    """
    >>> exec_("filename=/bin/my prog pid=7 old_pid=7")
    Exec(filename='/bin/my prog', pid=7, old_pid=7)
    """
    match = _EXEC.match(body)
    if match is None:
        return None
    return Exec(match["filename"], int(match["pid"]), int(match["old_pid"]))


def exit_(body: str) -> Exit | None:
    match = _EXIT.match(body)
    if match is None:
        return None
    dead = match["dead"]
    return Exit(match["comm"], int(match["pid"]), None if dead is None else dead == "true")


def fork(body: str) -> Fork | None:
    match = _FORK.match(body)
    if match is None:
        return None
    return Fork(int(match["pid"]), int(match["child"]), match["child_comm"])


def cgroup(body: str) -> Cgroup | None:
    """cgroup_mkdir/rmdir body.

    >>> cgroup("root=0 id=25 level=1 path=/kubepods")
    Cgroup(root=0, id=25, level=1, path='/kubepods', pid=None)
    """
    match = _CGROUP.match(body)
    if match is None:
        return None
    return Cgroup(int(match["root"]), int(match["id"]), int(match["level"]), match["path"])


def attach(body: str) -> Cgroup | None:
    match = _ATTACH.match(body)
    if match is None:
        return None
    return Cgroup(
        int(match["root"]), int(match["id"]), int(match["level"]), match["path"], int(match["pid"])
    )


def cpu_stats(text: str) -> dict[str, int]:
    """A per_cpu/cpuN/stats file as numbers (timestamps left out).

    >>> cpu_stats("entries: 3\\noverrun: 7\\noldest event ts:  1052.697309\\ndropped events: 1\\n")
    {'entries': 3, 'overrun': 7, 'dropped events': 1}
    """
    return {m["name"]: int(m["value"]) for m in _STAT.finditer(text)}


def lost_events(stats_texts: list[str]) -> int:
    """Events a buffer lost: overwritten when full (overrun) plus refused when
    full in non-overwrite mode (dropped events), summed over CPUs."""
    total = 0
    for text in stats_texts:
        stats = cpu_stats(text)
        total += stats.get("overrun", 0) + stats.get("dropped events", 0)
    return total


def proc_status_ids(status_text: str) -> tuple[int, int, int] | None:
    """(tgid, ppid, real uid) from /proc/<pid>/status.

    >>> proc_status_ids("Name:\\tsh\\nTgid:\\t42\\nPPid:\\t7\\nUid:\\t1000\\t1000\\t0\\t0\\n")
    (42, 7, 1000)
    """
    fields = dict(re.findall(r"^(Tgid|PPid|Uid):\s+(\d+)", status_text, re.M))
    if len(fields) != 3:
        return None
    return int(fields["Tgid"]), int(fields["PPid"]), int(fields["Uid"])
