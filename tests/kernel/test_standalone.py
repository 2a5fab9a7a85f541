"""`podtrace-agent standalone` as a user runs it: a real subprocess on this
kernel, with each backend, against a kubelet-like hierarchy made here in the
cgroup2 hierarchy (cgroupfs-driver names, traced from the initial scan, and
systemd-driver names, created after the agent started). Asserts on its JSON
lines: the environment, an exec of /bin/true with the right container ID and
pod UID, an exact getppid count, and nothing from processes outside kubepods.

Both layouts cannot be "the kubepods" at once (discovery picks the one with the
most pods and reports the other), so each run pins its own with --kubepods.
Only directories created here are removed, deepest first: a real containerd
test may be using /kubepods at the same time.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.prereq import missing, need_root
from podtrace_agent.discovery import discover
from podtrace_agent.fsretry import rmdir_retrying

GETPPIDS = 20_000
START_TIMEOUT_S = 180.0  # BCC's clang compile on a busy 2-core machine
EVENT_TIMEOUT_S = 30.0
# ftrace adds a task to the instance's pid filter only after its reader saw the
# task attach to the cgroup (BPF counts from the attach itself): the helper
# waits this long on its fifo before its loop.
SETTLE_S = {"bcc": 0.2, "ftrace": 3.0}

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def discovered_cgroup2() -> Path:
    """The cgroup2 hierarchy as the agent's own discovery finds it."""
    need_root("the kernel tier")
    report = discover(allow_mount=True)
    if not report.cgroup.root:
        missing(f"no cgroup2 hierarchy: {report.cgroup.message}")
    if not report.kernel.tracefs:
        missing("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing")
    return Path(report.cgroup.root)


@pytest.fixture(scope="module")
def agent_command() -> list[str]:
    script = Path(sys.executable).with_name("podtrace-agent")
    if not script.exists():
        missing("the podtrace-agent console script is not installed: run make venv")
    return [str(script), "standalone"]


@dataclass
class OwnCgroups:
    """Cgroups made for one test; removed (only those) deepest first.

    The pod and container cgroups carry this test's unique ids and must go;
    kubepods and QoS levels it happened to create may meanwhile hold another
    run's pods (tests run concurrently on shared machines): removed if empty.
    """

    root: Path
    made: list[Path] = field(default_factory=list)

    def mkdirs(self, rel: str) -> Path:
        path = self.root
        for part in rel.split("/"):
            path = path / part
            if not path.exists():
                path.mkdir()
                self.made.append(path)
        return path

    def remove(self, unique: tuple[str, ...]) -> None:
        left = []
        for path in reversed(self.made):
            ours = any(token in path.name.replace("_", "-") for token in unique)
            # a child's rmdir offlines it asynchronously: its parent is EBUSY for a moment,
            # and a just-exited process may still be leaving the cgroup
            try:
                rmdir_retrying(path, timeout=5.0 if ours else 2.0, interval=0.1)
            except OSError as error:
                if ours:
                    left.append(f"{path}: {error}")
        assert not left, f"cgroups left behind: {left}"


@pytest.fixture
def ids() -> tuple[str, str]:
    """A pod UID and container ID of this test only."""
    return str(uuid.uuid4()), uuid.uuid4().hex * 2


@pytest.fixture
def cgroups(discovered_cgroup2: Path, ids: tuple[str, str]) -> Iterator[OwnCgroups]:
    made = OwnCgroups(discovered_cgroup2)
    yield made
    made.remove(ids)


@dataclass(frozen=True)
class Layout:
    kubepods: str
    container: Callable[[str, str], str]  # (pod uid, container id) -> path below the root


def _systemd(uid: str, cid: str) -> str:
    u = uid.replace("-", "_")
    return (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/"
            f"cri-containerd-{cid}.scope")


CGROUPFS = Layout("kubepods", lambda uid, cid: f"kubepods/besteffort/pod{uid}/{cid}")
SYSTEMD = Layout("kubepods.slice", _systemd)


class Agent:
    """The standalone agent as a subprocess; its stdout read line by line."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[dict[str, Any]] = []
        self._stderr: str | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            self._queue.put(json.loads(text))
        self._queue.put(None)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first line (seen or coming) that matches."""
        for line in self.lines:
            if match(line):
                return line
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if match(line):
                return line
        raise AssertionError(f"no matching line in {timeout}s; got {self.lines}\n{self.stderr()}")

    def finish(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """All lines, once the agent has exited by itself."""
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:  # None: end of output
            self.lines.append(line)
        assert code == 0, self.stderr()
        return self.lines

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(agent still running)"
        if self._stderr is None:
            assert self.process.stderr is not None
            self._stderr = self.process.stderr.read()
        return self._stderr

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def run_in(
    helper: Path, procs: Path | None, program: str, tmp: Path, settle: float
) -> subprocess.Popen[bytes]:
    """helper joins `procs` (None: stays outside kubepods), waits `settle` seconds
    for go on a fifo, makes GETPPIDS getppid calls and execs `program`."""
    fifo = tmp / f"go-{uuid.uuid4().hex[:8]}"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [str(helper), str(procs) if procs else "-", str(fifo), str(GETPPIDS), program]
    )
    time.sleep(settle)
    with open(fifo, "w") as go:
        go.write("g")
    assert process.wait(timeout=60) == 0
    return process


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
@pytest.mark.parametrize(("layout", "created_after_start"),
                         [(CGROUPFS, False), (SYSTEMD, True)], ids=["cgroupfs", "systemd"])
def test_standalone_traces_containers_and_only_them(
    backend: str,
    layout: Layout,
    created_after_start: bool,
    helper: Path,  # tests/kernel/helper.c, built by conftest.py
    discovered_cgroup2: Path,
    agent_command: list[str],
    cgroups: OwnCgroups,
    ids: tuple[str, str],
    tmp_path: Path,
) -> None:
    uid, cid = ids
    cgroup2 = discovered_cgroup2
    path = layout.container(uid, cid)
    # a program outside kubepods with a name nobody else runs
    outside = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", outside)

    cgroups.mkdirs(layout.kubepods)
    if not created_after_start:
        cgroups.mkdirs(path)
    duration = "60s" if created_after_start else "25s"
    agent = Agent([*agent_command, "--duration", duration, "--backend", backend,
                   "--kubepods", layout.kubepods])
    try:
        env = agent.wait_for(lambda line: True, START_TIMEOUT_S)
        assert env["type"] == "environment", agent.stderr()
        assert env["backend"]["name"] == backend, env["backend"]
        assert env["cgroup"]["kubepods_path"] == layout.kubepods
        assert env["cgroup"]["kubepods_id"] == os.stat(cgroup2 / layout.kubepods).st_ino
        assert env["cgroup"]["root"] == str(cgroup2)
        assert env["problems"] == [] or all(not p["fatal"] for p in env["problems"])

        container_dir = cgroups.mkdirs(path) if created_after_start else cgroup2 / path
        traced = agent.wait_for(
            lambda line: line["type"] == "traced" and line["container_id"] == cid,
            EVENT_TIMEOUT_S,
        )
        assert traced["found"] == ("mkdir" if created_after_start else "scan")
        assert (traced["pod_uid"], traced["cgroup_id"]) == (uid, container_dir.stat().st_ino)

        run_in(helper, None, str(outside), tmp_path, SETTLE_S[backend])
        run_in(helper, container_dir / "cgroup.procs", "/bin/true", tmp_path, SETTLE_S[backend])
        exec_line = agent.wait_for(
            lambda line: line["type"] == "exec" and line["container_id"] == cid,
            EVENT_TIMEOUT_S,
        )
        if created_after_start:
            agent.process.send_signal(signal.SIGINT)  # summaries on SIGINT, too
        lines = agent.finish(timeout=120 if created_after_start else 60)
    finally:
        agent.close()

    assert exec_line["pod_uid"] == uid
    assert exec_line["cgroup_id"] == container_dir.stat().st_ino
    assert (exec_line["filename"], exec_line["comm"]) == ("/bin/true", "true")
    assert exec_line["identity"] == "cgroup-path"

    (summary,) = [ln for ln in lines if ln["type"] == "summary" and ln["container_id"] == cid]
    stats = lines[-1]
    assert summary["pod_uid"] == uid
    assert summary["cgroup_id"] == container_dir.stat().st_ino
    assert summary["syscalls"].get("getppid") == GETPPIDS, (summary, stats)
    assert summary["execs"] == [{"filename": "/bin/true", "count": 1}]
    assert summary["syscalls_total"] >= GETPPIDS

    # nothing from outside kubepods: not the outside program, and no line for a
    # container the agent did not announce as traced
    assert str(outside) not in json.dumps(lines), [ln for ln in lines if str(outside) in str(ln)]
    announced = {ln["container_id"] for ln in lines if ln["type"] == "traced"}
    assert {ln["container_id"] for ln in lines if ln["type"] in ("exec", "exit", "summary")} <= (
        announced
    )
    assert stats["type"] == "stats" and stats["backend"] == backend
    assert stats["events_dropped"] == 0, stats
