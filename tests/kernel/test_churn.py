"""The agent's core under container churn on this kernel: thousands of
container cgroups (some with a sub-cgroup, some running a process) created and
removed under a private kubepods while the core's loop traces them with a real
backend. Afterwards nothing per container is left: not in the core's
bookkeeping, not in the standalone mode's lines, not in the backend's traced
table. As fast as the churn goes, the ring buffer overflows and the core's
resync repairs what the lost events would have told; at a pace a busy node
keeps, nothing is lost and every container was summarised once, with the exec
it ran. (bench/churn.py prints the RSS and the rate of the same churn.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kernel_support import require_bcc, require_tracefs

from harness.churn import ChurnRoot, churn
from podtrace_agent.backend import KubepodsRoot
from podtrace_agent.core import Core, Stop, make_backend
from podtrace_agent.standalone import Lines
from podtrace_api.nodetracer import BackendName

pytestmark = pytest.mark.timeout(900)
QUIET_WAIT_S = 60.0


def _tracefs() -> str:
    from podtrace_agent.ftrace.tracefs import find_tracefs

    return str(find_tracefs())


class Watched(Lines):
    """The standalone mode, also reading the backend's traced-table fill (on the
    loop's thread: backends are not thread-safe) once a second."""

    traced: int | None = None  # None: not read yet
    dropped = 0
    _last = float("-inf")

    def tick(self, now: float) -> None:
        if now - self._last >= 1.0:
            self._last = now
            stats = self.backend.stats()
            self.traced = sum(m.used for m in stats.maps if m.name in ("traced", "instances"))
            self.dropped = stats.events_dropped

    def settled(self, core: Core) -> bool:
        """Nothing known, nothing traced, and a resync after any lost event."""
        return (core.containers.cgroup_count == 0 and self.traced == 0
                and (self.dropped == 0 or core.resyncs > 0))


@pytest.mark.parametrize(
    ("backend_name", "containers", "rate"),
    [("bcc", 2000, None), ("bcc", 1000, 200.0), ("ftrace", 200, 20.0)],
    ids=["bcc-flat-out", "bcc-paced", "ftrace-paced"],  # ftrace: an instance per cgroup
)
def test_churn_leaves_no_per_container_state(
    cgroup2: Path, backend_name: str, containers: int, rate: float | None
) -> None:
    if backend_name == "bcc":
        require_bcc()
    require_tracefs()
    lines: list[dict[str, Any]] = []
    with ChurnRoot(cgroup2) as root:
        kubepods = KubepodsRoot.at(cgroup2, root.kubepods)
        backend = make_backend(BackendName(backend_name), kubepods, _tracefs(),
                               max_traced=512)
        backend.start()
        try:
            mode = Watched(backend, lines.append)
            core = Core(backend, kubepods, mode)
            stop = Stop()
            loop = threading.Thread(target=core.run, args=(stop,), name="core")
            loop.start()
            try:
                made = churn(root, containers, rate=rate)
                deadline = time.monotonic() + QUIET_WAIT_S
                time.sleep(1.5)  # a tick reads the backend's numbers after the churn
                while not mode.settled(core) and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                stop()
                loop.join(QUIET_WAIT_S)
            assert not loop.is_alive()
            mode.finish(core)
        finally:
            backend.close()

    stats = lines[-1]
    assert stats["type"] == "stats", lines[-3:]
    # nothing per container is left anywhere
    assert (len(core.containers), core.containers.cgroup_count) == (0, 0), stats
    assert (mode.held, mode._execs) == (0, {})
    assert core.enrichment.pending == 0
    assert mode.traced == 0, stats
    # and nothing was missed on the way
    summaries = [line for line in lines if line["type"] == "summary"]
    assert stats["events_dropped"] == 0 or core.resyncs > 0, stats
    if rate is not None:
        assert stats["events_dropped"] == 0, stats
        assert len(summaries) == made.containers, stats
        assert len({s["container_id"] for s in summaries}) == made.containers
        ran = [s for s in summaries if s["execs"]]
        assert all(s["execs"] == [{"filename": "/bin/true", "count": 1}] for s in ran), ran[:3]
        if backend_name == "bcc":  # ftrace sees a task only once its reader saw it attach
            assert len(ran) == made.execs
        traced_lines = [line for line in lines if line["type"] == "traced"]
        assert len(traced_lines) == made.containers + made.subgroups, stats
        assert stats["unattributed_events"] == 0, stats
