"""Parsing ftrace text output; lines copied from this kernel's trace_pipe."""

from __future__ import annotations

import pytest

from podtrace_agent.ftrace import parse
from podtrace_agent.ftrace.tracefs import field_names

LINES = {
    "sys_enter": "            true-23187   (  23187) [001]   1052.695503: sys_enter: "
                 "NR 231 (0, e7, 3c, 7ffe1a108930, ffffffffffffff80, 7ffe1a1089af)",
    "exit": "            true-23187   (  23187) [001]   1052.695513: sched_process_exit: "
            "comm=true pid=23187 prio=120 group_dead=true",
    "fork": "              sh-23186   (  23186) [001]   1052.695740: sched_process_fork: "
            "comm=sh pid=23186 child_comm=sh child_pid=23188",
    "exec": "            true-23187   (  23187) [001]   1052.695100: sched_process_exec: "
            "filename=/bin/true pid=23187 old_pid=23187",
    "mkdir": "           mkdir-23886   [000] d..1.  1091.103039: cgroup_mkdir: "
             "root=0 id=291 level=2 path=/pt-glob/a",
    "attach": "              sh-23887   [000] d..1.  1091.126319: cgroup_attach_task: "
              "dst_root=0 dst_id=291 dst_level=2 dst_path=/pt-glob/a pid=23887 comm=sh",
}


def test_line_prefix() -> None:
    line = parse.parse_line(LINES["sys_enter"])
    assert line == parse.TraceLine(
        "true", 23187, 23187, 1, 1052_695_503_000, "sys_enter",
        "NR 231 (0, e7, 3c, 7ffe1a108930, ffffffffffffff80, 7ffe1a1089af)",
    )


def test_line_without_tgid_and_with_irq_info() -> None:
    line = parse.parse_line(LINES["mkdir"])
    assert line is not None
    assert (line.comm, line.pid, line.tgid, line.cpu, line.event) == (
        "mkdir", 23886, None, 0, "cgroup_mkdir"
    )


def test_comm_with_dashes_and_spaces() -> None:
    line = parse.parse_line(
        " kworker/u4:1-ev q-77 (     77) [000]   5.000001: sched_process_exit: x"
    )
    assert line is not None and (line.comm, line.pid, line.tgid) == ("kworker/u4:1-ev q", 77, 77)


@pytest.mark.parametrize("text", ["", "CPU:1 [LOST 3 EVENTS]", "# tracer: nop"])
def test_non_event_lines(text: str) -> None:
    assert parse.parse_line(text) is None


def body(name: str) -> str:
    line = parse.parse_line(LINES[name])
    assert line is not None
    return line.body


def test_bodies() -> None:
    assert parse.sys_enter(body("sys_enter")) == parse.SysEnter(
        231, (0, 0xE7, 0x3C, 0x7FFE1A108930, 0xFFFFFFFFFFFFFF80, 0x7FFE1A1089AF)
    )
    assert parse.exit_(body("exit")) == parse.Exit("true", 23187, True)
    assert parse.exit_("comm=a b pid=3 prio=120") == parse.Exit("a b", 3, None)
    assert parse.fork(body("fork")) == parse.Fork(23186, 23188, "sh")
    assert parse.exec_(body("exec")) == parse.Exec("/bin/true", 23187, 23187)
    assert parse.cgroup(body("mkdir")) == parse.Cgroup(0, 291, 2, "/pt-glob/a")
    assert parse.attach(body("attach")) == parse.Cgroup(0, 291, 2, "/pt-glob/a", 23887)
    assert parse.sys_enter("garbage") is None
    assert parse.cgroup("dst_root=0") is None


def test_lost_events_sum_overrun_and_dropped() -> None:
    cpu0 = (
        "entries: 3\noverrun: 10\ncommit overrun: 0\nbytes: 176\n"
        "oldest event ts:  1052.697309\nnow ts:  1052.713597\n"
        "dropped events: 2\nread events: 0\n"
    )
    cpu1 = "entries: 0\noverrun: 5\ndropped events: 0\n"
    assert parse.lost_events([cpu0, cpu1]) == 17


def test_proc_status() -> None:
    text = "Name:\tsh\nUmask:\t0022\nState:\tS\nTgid:\t42\nNgid:\t0\nPid:\t43\nPPid:\t7\n" \
           "Uid:\t1000\t1000\t1000\t1000\n"
    assert parse.proc_status_ids(text) == (42, 7, 1000)
    assert parse.proc_status_ids("Name:\tsh\n") is None


def test_format_field_names() -> None:
    text = (
        "name: sched_process_exit\nID: 300\nformat:\n"
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n"
        "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n"
    )
    assert field_names(text) == ["common_type", "comm", "group_dead"]
