"""`podtrace-agent standalone` with the bcc backend against a real containerd: a
container's execs and syscall counts carry the right pod and container name.

The agent runs as users run it (the CLI, `--runtime-endpoint` at this test's
containerd); one pod exists before it starts (found by its scan), one is created
while it traces (found by cgroup_mkdir)."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import prereq
from harness.containerd import Containerd, Pod, PodRunner
from harness.oci_image import OCIImage

LOOP = ["/bin/sh", "-c", "while true; do /bin/true; /bin/sleep 0.2; done"]
TRACE_S = 6


def _need_bcc() -> None:
    if importlib.util.find_spec("bcc") is None:
        prereq.missing("bcc is not importable: apt-get install python3-bpfcc; scripts/make-venv")
    if not Path(f"/lib/modules/{os.uname().release}/build").exists():
        prereq.missing("no kernel headers for BCC: run scripts/install-deps as root")


class Agent:
    """`podtrace-agent standalone` in a subprocess; its JSON lines arrive on a queue
    as they are printed, its stderr goes to a file."""

    def __init__(self, stderr: Path, *args: str) -> None:
        argv = [sys.executable, "-m", "podtrace_agent.main", "standalone", *args]
        self.stderr = stderr
        with stderr.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)  # end of output

    def next_line(self, timeout: float) -> dict[str, Any] | None:
        return self.lines.get(timeout=timeout)

    def finish(self, timeout: float) -> list[dict[str, Any]]:
        """Wait for the agent to exit; the lines not taken with next_line yet."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        return rest

    def kill(self) -> None:
        """Make sure the agent is gone and its pipe closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def early(pods: PodRunner, busybox_image: OCIImage) -> Iterator[tuple[Pod, str]]:
    pod = pods.run_pod("web-0", "shop")
    yield pod, pods.start_container(pod, "app", busybox_image.name, LOOP)
    pods.remove_pod(pod)


def test_execs_and_syscalls_carry_pod_and_container_names(
    containerd: Containerd,
    pods: PodRunner,
    busybox_image: OCIImage,
    early: tuple[Pod, str],
    tmp_path: Path,
) -> None:
    _need_bcc()
    web, web_id = early
    agent = Agent(
        tmp_path / "agent.stderr",
        "--backend", "bcc", "--duration", f"{TRACE_S}s", "--runtime-endpoint", containerd.endpoint
    )  # fmt: skip
    try:
        first = agent.next_line(timeout=120)  # BCC compiles first
        assert first is not None, f"the agent printed nothing: {agent.stderr.read_text()}"
        assert first["type"] == "environment", first
        late = pods.run_pod("late-0", "batch")
        late_id = pods.start_container(late, "worker", busybox_image.name, LOOP)
        lines = agent.finish(timeout=TRACE_S + 60)
    finally:
        agent.kill()
    stderr = agent.stderr.read_text()
    assert agent.proc.returncode == 0, stderr
    assert "podtrace-agent: runtime: containerd " in stderr and containerd.endpoint in stderr
    pods.remove_pod(late)

    def named(container_id: str, kind: str) -> list[dict[str, Any]]:
        return [x for x in lines if x["type"] == kind and x["container_id"] == container_id]

    for cid, pod, ns, name in ((web_id, "web-0", "shop", "app"),
                               (late_id, "late-0", "batch", "worker")):  # fmt: skip
        execs = named(cid, "exec")
        assert {x["filename"] for x in execs} >= {"/bin/true", "/bin/sleep"}, name
        assert all(
            (x["identity"], x["pod"], x["namespace"], x["container"]) == ("cri", pod, ns, name)
            for x in execs
        ), execs[:2]
        (summary,) = named(cid, "summary")
        assert (summary["pod"], summary["namespace"], summary["container"]) == (pod, ns, name)
        assert summary["image"] == busybox_image.name and summary["sandbox"] is False
        assert summary["syscalls"].get("execve", 0) >= 2 and summary["syscalls_total"] > 0
    (sandbox,) = named(web.sandbox_id, "summary")
    assert (sandbox["identity"], sandbox["pod"], sandbox["sandbox"]) == ("cri", "web-0", True)
