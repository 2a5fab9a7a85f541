"""Issue 11 part 1 end to end with the agent itself: `podtrace-agent standalone`
(bcc, pinned under an instance of this test) is killed with SIGKILL while a
container makes 3,000,000 getppid calls; the container goes on and execs
/bin/true while no agent runs; a new agent of the same instance finds the
container again, prints the exec it missed and, at its end, a summary with
exactly 3,000,000 getppid. Its normal end removes the pins.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from kernel_support import Hierarchy, run_helper
from test_standalone import START_TIMEOUT_S, Agent

from harness.prereq import missing
from podtrace_agent.bpf import pins

N = 3_000_000

pytestmark = pytest.mark.timeout(600)


def command(instance: str) -> list[str]:
    script = Path(sys.executable).with_name("podtrace-agent")
    if not script.exists():
        missing("the podtrace-agent console script is not installed: run make venv")
    return [str(script), "standalone", "--backend", "bcc", "--kubepods", "kubepods",
            "--instance", instance]


def test_standalone_killed_and_restarted_counts_exactly(
    hierarchy: Hierarchy, helper: Path, tmp_path: Path, instance: str
) -> None:
    container = hierarchy.container()
    cid = container.name
    first = Agent(command(instance))
    second: Agent | None = None
    try:
        first.wait_for(lambda x: x["type"] == "traced" and x["container_id"] == cid,
                       START_TIMEOUT_S)
        run = run_helper(helper, container, N, ("/bin/true",), wait_for_go=True,
                         tmp_path=tmp_path)
        run.release()
        time.sleep(0.3)
        assert run.process.poll() is None, "the workload ended before the kill"
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
        assert run.wait() == 0  # it went on, and exec'd with no agent running
        assert (pins.PIN_ROOT / instance).is_dir()

        second = Agent(command(instance))
        second.wait_for(lambda x: x["type"] == "traced" and x["container_id"] == cid,
                        START_TIMEOUT_S)
        missed = second.wait_for(lambda x: x["type"] == "exec" and x["pid"] == run.pid,
                                 30.0)
        second.process.send_signal(signal.SIGINT)
        lines = second.finish()
        summary = next(x for x in lines if x["type"] == "summary" and x["container_id"] == cid)
        counted = summary["syscalls"].get("getppid", 0)
        stats = next(x for x in lines if x["type"] == "stats")
        print(f"\nstandalone kill -9 mid-workload, restart: getppid {counted} of {N} "
              f"(lost over the restart: {N - counted}); the exec made while no agent ran: "
              f"printed by the new agent ({missed['filename']}); events dropped "
              f"{stats['events_dropped']}")
        assert "resumed the pinned maps" in second.stderr(), second.stderr()
        assert counted == N
        assert missed["filename"] == "/bin/true"
        assert summary["execs"] == [{"filename": "/bin/true", "count": 1}]
        assert stats["events_dropped"] == 0
        assert not (pins.PIN_ROOT / instance).exists()  # a normal end unpins
    finally:
        first.close()
        if second is not None:
            second.close()
