"""What only the bcc backend does: open/connect events filtered in kernel, the
ring-buffer drop counter, the in-kernel container-level rule for systemd-driver
names, and the kubepods ancestor check for a cgroup put in the traced map."""

from __future__ import annotations

import ctypes
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_support import (
    Collector,
    Hierarchy,
    cgroup_id,
    have,
    run_helper,
    start_backend,
)

from podtrace_agent.backend import (
    CgroupEvent,
    ConnectEvent,
    ExitEvent,
    OpenEvent,
)
from podtrace_agent.bpf.wire import TracedCgroup
from podtrace_api.nodeconfig import Probe
from podtrace_api.syscalls import number_of

PYTHON = "/usr/bin/python3"


def run_python(
    collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path, mask: Probe,
    code: str, **filters: tuple,
) -> int:
    """Run `python3 -S -c code` in a new traced container; its cgroup id once it
    exited. The container is untraced then: the session's backend is shared, and
    its filters would hold entries of the prefix and port tables other tests fill."""
    have("python3")
    container = hierarchy.container()
    cid = cgroup_id(container)
    collector.backend.trace(cid, hierarchy.rel(container), mask | Probe.EXIT, **filters)
    try:
        run = run_helper(helper, container, 0, (PYTHON, "-S", "-c", code), wait_for_go=False,
                         tmp_path=tmp_path)
        assert run.wait() == 0
        collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.pid == run.pid)
    finally:
        collector.backend.untrace(cid)
    return cid


def test_open_events_only_under_the_prefixes(
    bcc_collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    code = "open('/etc/hostname').close()\ntry: open('/nonexistent/x')\nexcept OSError: pass"
    cid = run_python(bcc_collector, hierarchy, helper, tmp_path, Probe.OPEN, code,
                     open_prefixes=("/etc/hostname", "/nonexistent/"))

    opens = [(e.path, e.comm) for e in bcc_collector.about(cid) if isinstance(e, OpenEvent)]
    # python's own start-up opens dozens of files; the kernel kept only these.
    assert opens == [("/etc/hostname", "python3"), ("/nonexistent/x", "python3")]


def test_connect_events_only_for_the_ports(
    bcc_collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    code = (
        "import socket\n"
        "for fam, addr in ((socket.AF_INET, ('127.0.0.1', 1)), (socket.AF_INET, ('127.0.0.1', 2)),"
        " (socket.AF_INET6, ('::1', 1))):\n"
        "    s = socket.socket(fam)\n"
        "    try: s.connect(addr)\n"
        "    except OSError: pass\n"
    )
    cid = run_python(bcc_collector, hierarchy, helper, tmp_path, Probe.CONNECT, code,
                     connect_ports=(1,))

    connects = [
        (e.family, e.address, e.port) for e in bcc_collector.about(cid)
        if isinstance(e, ConnectEvent)
    ]
    assert connects == [(socket.AF_INET, "127.0.0.1", 1), (socket.AF_INET6, "::1", 1)]


def test_ancestor_check_ignores_a_traced_cgroup_outside_kubepods(
    bcc_collector: Collector, hierarchy: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    """White-box: trace() refuses such a cgroup, so put it in the map directly."""
    outside = hierarchy.outside()
    oid = ctypes.c_uint64(cgroup_id(outside))
    traced = bcc_collector.backend._table("traced")  # type: ignore[attr-defined]
    free_row = bcc_collector.backend.options.max_traced - 1  # the queue hands out 0 first
    traced[oid] = TracedCgroup(int(Probe.SYSCALLS | Probe.EXEC), free_row, 0, 0, 0, 0)
    try:
        assert run_helper(helper, outside, 1000, wait_for_go=False, tmp_path=tmp_path).wait() == 0
        counts = bcc_collector.backend.syscall_counts()  # reads the row of every entry
        assert counts[oid.value] == {}
        assert [e for e in bcc_collector.drain(0.2) if e.cgroup_id == oid.value] == []
    finally:
        del traced[oid]


@pytest.fixture
def private_kubepods(cgroup2: Path) -> Iterator[Hierarchy]:
    """A kubepods of its own, so that nothing else happens below it; named as on
    kind (kubelet's systemd driver with cgroup root /kubelet)."""
    name = f"podtrace-kt-{uuid.uuid4().hex[:8]}.slice/kubelet-kubepods.slice"
    h = Hierarchy(cgroup2, name, qos="")
    yield h
    h.cleanup()


def test_ring_buffer_drops_are_counted(
    private_kubepods: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    execs = 40
    root = private_kubepods.root()
    backend = start_backend("bcc", root, ringbuf_pages=1)  # 4 KiB: ~13 exec records
    try:
        container = private_kubepods.container()  # mkdir events: pod and container
        backend.trace(cgroup_id(container), private_kubepods.rel(container), Probe.EXEC)
        loop = f"i=0; while [ $i -lt {execs} ]; do /bin/true; i=$((i+1)); done"
        run = run_helper(helper, container, 0, ("/bin/sh", "-c", loop), wait_for_go=False,
                         tmp_path=tmp_path)
        assert run.wait() == 0  # nothing polled meanwhile: the buffer overflows
        while backend.poll(0.2):
            pass
        stats = backend.stats()
        print(f"ring buffer of 1 page: seen {stats.events_seen}, dropped {stats.events_dropped}")
        assert stats.events_dropped > 0
        assert stats.events_seen + stats.events_dropped == 2 + 1 + execs  # mkdirs, sh, trues
    finally:
        backend.close()


def test_container_level_rule_with_systemd_names(
    private_kubepods: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    root = private_kubepods.root()
    base = private_kubepods.cgroup2 / root.path
    backend = start_backend("bcc", root)
    collector = Collector(backend)
    try:
        uid = str(uuid.uuid4()).replace("-", "_")
        scope = f"cri-containerd-{uuid.uuid4().hex * 2}.scope"
        # kind's names: the ones the old fixed QoS list took for pods
        paths = {
            "qos": base / "kubelet-kubepods-besteffort.slice",
            "pod": base / "kubelet-kubepods-besteffort.slice"
            / f"kubelet-kubepods-besteffort-pod{uid}.slice",
            "guaranteed pod": base / f"kubelet-kubepods-pod{uid}.slice",
        }
        paths["container"] = paths["pod"] / scope
        paths["guaranteed container"] = paths["guaranteed pod"] / scope
        for path in paths.values():
            private_kubepods.mkdir(path)
        ids = {name: cgroup_id(path) for name, path in paths.items()}
        for cid in ids.values():
            collector.wait_for(lambda e, c=cid: isinstance(e, CgroupEvent) and e.cgroup_id == c)

        traced = {
            name: next(e.traced for e in collector.about(cid) if isinstance(e, CgroupEvent))
            for name, cid in ids.items()
        }
        assert traced == {
            "qos": False, "pod": False, "guaranteed pod": False,
            "container": True, "guaranteed container": True,
        }
        run = run_helper(helper, paths["container"], 123, wait_for_go=False, tmp_path=tmp_path)
        assert run.wait() == 0
        assert backend.syscall_counts()[ids["container"]][number_of("getppid")] == 123
    finally:
        backend.close()


def test_without_btf_the_classic_tracepoint_counts_the_same(
    private_kubepods: Hierarchy, helper: Path, tmp_path: Path
) -> None:
    """No BTF offsets: raw_syscalls:sys_enter with its args[], no ppid, no exit code."""
    root = private_kubepods.root()
    backend = start_backend("bcc", root, use_btf=False)
    collector = Collector(backend)
    try:
        assert b"tracepoint__raw_syscalls__sys_enter" in backend._bpf.funcs  # type: ignore[attr-defined]
        container = private_kubepods.container()
        cid = cgroup_id(container)
        backend.trace(cid, private_kubepods.rel(container),
                      Probe.SYSCALLS | Probe.EXEC | Probe.EXIT | Probe.OPEN,
                      open_prefixes=("/etc/hostname",))
        code = "open('/etc/hostname').close()"
        run = run_helper(helper, container, 321, (PYTHON, "-S", "-c", code), wait_for_go=False,
                         tmp_path=tmp_path)
        assert run.wait() == 0
        exit_event = collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.pid == run.pid)

        assert backend.syscall_counts()[cid][number_of("getppid")] == 321
        assert isinstance(exit_event, ExitEvent)
        assert (exit_event.ppid, exit_event.exit_code) == (None, None)
        opens = [e.path for e in collector.about(cid) if isinstance(e, OpenEvent)]
        assert opens == ["/etc/hostname"]
    finally:
        backend.close()
