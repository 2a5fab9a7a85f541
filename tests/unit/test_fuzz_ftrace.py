"""Property tests of the ftrace text parser: lines written the way the kernel writes
them (kernel/trace/trace_output.c: "%16s-%-7d", "(%7d)", "[%03d]", "%5lu.%06lu: ",
then the event's print fmt) parse back to what was written, whatever a traced
process chose for its name or the files it runs; nothing raises on any text.

What a process controls goes in unfiltered: its comm (up to 15 bytes, TASK_COMM_LEN)
and the filenames it executes (any bytes but NUL and "/" in a name; a newline in a
filename would start a new line of trace_pipe, which no parser of the text can
undo: left out here, see ftrace/parse.py).
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from podtrace_agent.ftrace import parse

NO_NEWLINE = st.characters(codec="utf-8", exclude_characters="\n\0")
# A comm: at most 15 characters, anything but a newline; the kernel right-aligns it in
# 16 columns, so one that starts with blanks cannot be told from the padding.
COMMS = st.text(NO_NEWLINE, min_size=1, max_size=15).filter(lambda c: not c[0].isspace())
FREE = st.text(NO_NEWLINE, max_size=120)  # filenames, cgroup paths
# What a hostile name would imitate: pieces of a line's prefix and of event bodies.
TRAPS = st.sampled_from([
    "-1 ", "-7 (      7) [000] ", " [003] d..1. ", " 5.000001: ", "sched_process_exec: ",
    " pid=1", " old_pid=1", " comm=x", " child_comm=x", " child_pid=1", " prio=120",
    " group_dead=true", " dst_path=/x", " path=/x", " level=1", "(", ")", "[1]",
])  # fmt: skip
HOSTILE = st.lists(TRAPS | FREE, max_size=4).map("".join)
PIDS = st.integers(1, 4_194_304)


def prefix(comm: str, pid: int, tgid: int | None, cpu: int, ns: int, irq: str) -> str:
    tgid_field = f"({tgid:>7}) " if tgid is not None else ("(-------) " if irq else "")
    sec, usec = divmod(ns // 1000, 1_000_000)
    return f"{comm:>16}-{pid:<7} {tgid_field}[{cpu:03d}] {irq}{sec:5d}.{usec:06d}: "


@st.composite
def lines(draw: st.DrawFn, event: str, body: str) -> tuple[str, parse.TraceLine]:
    comm, pid = draw(COMMS), draw(PIDS)
    tgid = draw(st.none() | PIDS)
    cpu = draw(st.integers(0, 511))
    ns = draw(st.integers(0, 10**12)) * 1000
    irq = draw(st.sampled_from(["", "d..1. ", "...1. ", "dNh2. "]))
    text = prefix(comm, pid, tgid, cpu, ns, irq) + f"{event}: {body}"
    return text, parse.TraceLine(comm, pid, tgid, cpu, ns, event, body)


@given(st.tuples(st.sampled_from(["sys_enter", "sched_process_exec", "cgroup_mkdir"]),
                 HOSTILE).flatmap(lambda eb: lines(*eb)))  # fmt: skip
@example(("     sh-5       (      5) [000]     1.000001: sched_process_exec: "
          "filename=/x-9 [1] 2.000003: ev: zz pid=5 old_pid=5",
          parse.TraceLine("sh", 5, 5, 0, 1_000_001_000, "sched_process_exec",
                          "filename=/x-9 [1] 2.000003: ev: zz pid=5 old_pid=5")))  # fmt: skip
def test_a_line_parses_back_whatever_its_body(case: tuple[str, parse.TraceLine]) -> None:
    text, expected = case
    assert parse.parse_line(text) == expected


@given(HOSTILE, PIDS, PIDS)
def test_exec_bodies_parse_back(filename: str, pid: int, old_pid: int) -> None:
    body = f"filename={filename} pid={pid} old_pid={old_pid}"
    assert parse.exec_(body) == parse.Exec(filename, pid, old_pid)


@given(COMMS, PIDS, st.integers(-100, 139), st.none() | st.booleans())
def test_exit_bodies_parse_back(comm: str, pid: int, prio: int, dead: bool | None) -> None:
    tail = "" if dead is None else f" group_dead={str(dead).lower()}"
    assert parse.exit_(f"comm={comm} pid={pid} prio={prio}{tail}") == parse.Exit(comm, pid, dead)


@given(COMMS, PIDS, COMMS, PIDS)
def test_fork_bodies_parse_back(comm: str, pid: int, child_comm: str, child: int) -> None:
    body = f"comm={comm} pid={pid} child_comm={child_comm} child_pid={child}"
    assert parse.fork(body) == parse.Fork(pid, child, child_comm)


@given(st.integers(0, 15), st.integers(1, 2**63), st.integers(0, 64), HOSTILE)
def test_cgroup_bodies_parse_back(root: int, cid: int, level: int, path: str) -> None:
    body = f"root={root} id={cid} level={level} path={path}"
    assert parse.cgroup(body) == parse.Cgroup(root, cid, level, path)


KUBEPODS_PATHS = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=40), max_size=5
).map(lambda p: "/" + "/".join(p))


@given(st.integers(0, 15), st.integers(1, 2**63), st.integers(0, 64), KUBEPODS_PATHS, PIDS,
       COMMS | st.sampled_from(["a pid=1 comm=b", " pid=1 comm=", "x comm=y"]))  # fmt: skip
def test_attach_bodies_parse_back_whatever_the_comm(
    root: int, cid: int, level: int, path: str, pid: int, comm: str
) -> None:
    """The moved task names itself (prctl): its comm must not move the pid."""
    body = f"dst_root={root} dst_id={cid} dst_level={level} dst_path={path} pid={pid} comm={comm}"
    assert parse.attach(body) == parse.Cgroup(root, cid, level, path, pid)


@given(st.lists(st.integers(0, 2**63), min_size=1, max_size=6).map(tuple),
       st.integers(-(2**31), 2**31))  # fmt: skip
def test_sys_enter_bodies_parse_back(args: tuple[int, ...], nr: int) -> None:
    body = f"NR {nr} ({', '.join(f'{a:x}' for a in args)})"
    assert parse.sys_enter(body) == parse.SysEnter(nr, args)


@given(st.dictionaries(st.sampled_from(["entries", "overrun", "commit overrun", "bytes",
                                        "dropped events", "read events"]),
                       st.integers(0, 2**40)))  # fmt: skip
def test_cpu_stats_parse_back(stats: dict[str, int]) -> None:
    text = "".join(f"{k}: {v}\n" for k, v in stats.items()) + "oldest event ts:  1052.697309\n"
    assert parse.cpu_stats(text) == stats
    assert parse.lost_events([text]) == stats.get("overrun", 0) + stats.get("dropped events", 0)


@given(PIDS, PIDS, st.integers(0, 2**32 - 1), COMMS)
def test_proc_status_parses_back(tgid: int, ppid: int, uid: int, name: str) -> None:
    text = f"Name:\t{name}\nUmask:\t0022\nTgid:\t{tgid}\nPid:\t{tgid}\nPPid:\t{ppid}\n" \
           f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n"  # fmt: skip
    assert parse.proc_status_ids(text) == (tgid, ppid, uid)


@given(st.text(max_size=300))
def test_nothing_raises_on_any_text(text: str) -> None:
    line = parse.parse_line(text)
    for body in (text, line.body if line else ""):
        for fn in (parse.sys_enter, parse.exec_, parse.exit_, parse.fork, parse.cgroup,
                   parse.attach):  # fmt: skip
            fn(body)
    parse.cpu_stats(text)
    parse.proc_status_ids(text)
