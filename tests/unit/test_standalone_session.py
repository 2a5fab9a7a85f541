"""The standalone command over the core: scanned and newly created container
cgroups become traced containers, backend events become JSON lines, summaries
add a container's cgroups up, and a container that goes is summarised and
forgotten. (The core's loop runs here over a scripted backend;
tests/kernel/test_standalone.py runs the real command against both real backends.)"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podtrace_agent.backend import (
    BackendError,
    BackendStats,
    CapacityError,
    CgroupEvent,
    Event,
    ExecEvent,
    ExitEvent,
    KubepodsRoot,
    MapStat,
    OpenEvent,
)
from podtrace_agent.core import Core, Enrichment, PathOnly, Stop, start_backend, wall_time
from podtrace_agent.core.enrichment import ask
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
)
from podtrace_agent.identity import parse
from podtrace_agent.main import main, parser
from podtrace_agent.scan import ContainerCgroup
from podtrace_agent.standalone import PROBES, Lines, identity_fields, standalone
from podtrace_api.nodetracer import BackendName, IdentitySource
from podtrace_api.syscalls import number_of

UID = "11111111-2222-4333-8444-555555555555"
A, B = "a" * 64, "b" * 64
POD = f"kubepods/besteffort/pod{UID}"
GETPPID = number_of("getppid")
READ = number_of("read")
assert GETPPID is not None and READ is not None


def container(cgroup_id: int, path: str) -> ContainerCgroup:
    identity = parse(path)
    assert identity is not None
    return ContainerCgroup(cgroup_id, path, identity)


def exec_event(cgroup_id: int, filename: str = "/bin/true", pid: int = 7) -> ExecEvent:
    return ExecEvent(cgroup_id, pid, 1, 0, filename.rsplit("/", 1)[-1], filename, 5_000_000_000)


@dataclass
class ScriptedBackend:
    """Plays poll() batches back, then stops the loop; records trace() calls."""

    batches: list[list[Event]] = field(default_factory=list)
    stop: Stop = field(default_factory=Stop)
    counts: dict[int, dict[int, int]] = field(default_factory=dict)
    full: set[int] = field(default_factory=set)
    traced: list[tuple[int, str, int]] = field(default_factory=list)
    name: str = "scripted"

    def start(self) -> None: ...

    def trace(self, cgroup_id: int, path: str, mask: Any, *_: Any) -> None:
        if cgroup_id in self.full:
            raise CapacityError("all 1 counter rows are in use")
        self.traced.append((cgroup_id, path, int(mask)))

    def untrace(self, cgroup_id: int) -> None: ...

    def poll(self, timeout: float) -> list[Event]:
        if not self.batches:
            self.stop.signalled = True
            return []
        return self.batches.pop(0)

    def syscall_counts(self) -> dict[int, dict[int, int]]:
        return self.counts

    def stats(self) -> BackendStats:
        return BackendStats(9, 2, [MapStat("traced", 2, 512)], untraced_for_capacity=1)

    def close(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    backend: ScriptedBackend
    lines: Lines
    core: Core
    out: list[dict[str, Any]]
    clock: Clock

    def later(self, batch: list[Event]) -> None:
        """One turn a second later (removals wait for a counts read)."""
        self.clock.now += 1.0
        self.backend.batches = [batch]
        self.core.step(0)


def setup(tmp_path: Path, enricher: Any = None, clock_offset_ns: int = 0,
          skip: str | None = None) -> Setup:
    """A core over a scripted backend, the standalone Mode printing into a list; the
    cgroup tree (for resyncs) is an empty directory."""
    backend = ScriptedBackend()
    out: list[dict[str, Any]] = []
    lines = Lines(backend, out.append, clock_offset_ns=clock_offset_ns)  # type: ignore[arg-type]
    root = KubepodsRoot(tmp_path, "kubepods", 44, 1)
    clock = Clock()
    core = Core(backend, root, lines, enrichment=Enrichment(enricher),  # type: ignore[arg-type]
                skip_container=skip, clock=clock)
    return Setup(backend, lines, core, out, clock)


# --- the standalone Mode over the core -------------------------------------------------


def test_each_cgroup_is_traced_once_and_the_agent_never(tmp_path: Path) -> None:
    s = setup(tmp_path, skip=B)
    s.core.adopt([container(10, f"{POD}/{A}"), container(10, f"{POD}/{A}"),
                  container(11, f"{POD}/{B}")])
    assert s.backend.traced == [(10, f"{POD}/{A}", int(PROBES))]
    assert [c.container_id for c in s.core.containers] == [A]
    assert [(line["type"], line["found"]) for line in s.out] == [("traced", "scan")]


def test_mkdir_of_container_cgroups_only(tmp_path: Path) -> None:
    s = setup(tmp_path)
    mkdir = CgroupEvent("mkdir", 20, 4, f"/{POD}/{A}", 0)
    s.backend.batches = [[mkdir, mkdir, CgroupEvent("mkdir", 21, 3, POD, 0),
                          CgroupEvent("mkdir", 22, 4, f"{POD}/crio-conmon-{B}", 0)]]
    s.core.step(0)
    assert s.backend.traced == [(20, f"{POD}/{A}", int(PROBES))]  # known already: once
    assert [line["found"] for line in s.out] == ["mkdir"]


def test_exec_and_exit_lines(tmp_path: Path) -> None:
    s = setup(tmp_path, clock_offset_ns=1_700_000_000_000_000_000)
    s.core.adopt([container(10, f"{POD}/{A}")])
    s.backend.batches = [[exec_event(10), ExitEvent(10, 7, 1, None, "true", 256, 5_000_000_000)]]
    s.core.step(0)
    _traced, line, exit_line = s.out
    assert line == {
        "type": "exec", "container_id": A, "pod_uid": UID, "cgroup_id": 10, "pid": 7,
        "ppid": 1, "uid": 0, "comm": "true", "filename": "/bin/true",
        "time": "2023-11-14T22:13:25.000000Z", "identity": "cgroup-path",
    }
    assert (exit_line["type"], exit_line["exit_code"], exit_line["uid"]) == ("exit", 256, None)
    assert "filename" not in exit_line


def test_events_of_unknown_cgroups_are_counted_not_printed(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.backend.batches = [[exec_event(99), OpenEvent(99, 1, "cat", "/etc/passwd", 0, 0)]]
    s.core.step(0)
    assert s.out == []
    assert s.core.unattributed == 2


def test_summaries_add_a_containers_cgroups_up(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.core.adopt([container(10, f"{POD}/crio-{A}.scope"),
                  container(11, f"{POD}/crio-{A}.scope/container"), container(12, f"{POD}/{B}")])
    s.backend.batches = [[exec_event(11, "/bin/sh"), exec_event(11, "/bin/true"),
                          exec_event(11, "/bin/true"), exec_event(10, "/bin/a")]]
    s.core.step(0)
    s.backend.counts = {10: {READ: 2}, 11: {READ: 3, GETPPID: 1000, -1: 4}, 99: {READ: 1}}
    s.core.read_counts()
    s.out.clear()
    s.lines.finish(s.core)
    first, second, _stats = s.out
    assert first == {
        "type": "summary", "container_id": A, "pod_uid": UID, "cgroup_id": 10,
        "syscalls": {"getppid": 1000, "other": 4, "read": 5}, "syscalls_total": 1009,
        "execs": [{"filename": "/bin/true", "count": 2}, {"filename": "/bin/a", "count": 1},
                  {"filename": "/bin/sh", "count": 1}],
        "identity": "cgroup-path",
    }
    assert (second["container_id"], second["syscalls"], second["execs"]) == (B, {}, [])


def test_a_container_that_goes_is_summarised_then_forgotten(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.core.adopt([container(10, f"{POD}/crio-{A}.scope"),
                  container(11, f"{POD}/crio-{A}.scope/container")])
    s.backend.batches = [[exec_event(11, "/bin/sh")]]
    s.core.step(0)
    # the sub-cgroup goes first (rmdir needs an empty cgroup); its counts are carried
    s.backend.counts = {10: {READ: 2}, 11: {READ: 3}}
    s.later([CgroupEvent("rmdir", 11, 5, f"{POD}/crio-{A}.scope/container", 0)])
    assert [line["type"] for line in s.out] == ["traced", "traced", "exec"]
    s.backend.counts = {10: {READ: 4}}
    s.backend.batches = [[CgroupEvent("rmdir", 10, 4, f"{POD}/crio-{A}.scope", 0)]]
    s.core.step(0)
    assert s.out[-1]["type"] == "exec"  # the removal waits for the next counts read
    s.later([])
    summary = s.out[-1]
    assert (summary["type"], summary["cgroup_id"], summary["syscalls"]) == (
        "summary", 10, {"read": 7})
    assert summary["execs"] == [{"filename": "/bin/sh", "count": 1}]
    assert len(s.core.containers) == 0 and s.core.containers.cgroup_count == 0
    assert s.lines.held == 0 and not s.lines._execs
    s.out.clear()
    s.lines.finish(s.core)
    assert [line["type"] for line in s.out] == ["stats"]


def test_wall_time() -> None:
    assert wall_time(0, 0) == "1970-01-01T00:00:00.000000Z"
    assert wall_time(1_500, 1_000_000_000) == "1970-01-01T00:00:01.000001Z"


# --- the enrichment seam ----------------------------------------------------------------


@dataclass
class Found:
    source: IdentitySource | None
    reason: str = ""
    pod_name: str = "web-0"
    namespace: str = "shop"
    container_name: str = "app"
    image: str = "registry.local/web:1"
    sandbox: bool | None = False


class Enricher:
    """Answers at once, without a runtime to ask (so the core asks it on the loop)."""

    asks_runtime = False

    def __init__(self, answer: Found | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str | None]] = []

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> Found:
        self.asked.append((container_id, cgroup_path))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_identity_without_enricher() -> None:
    assert identity_fields(PathOnly()) == {"identity": "cgroup-path"}
    assert Enrichment(None).request(A, f"{POD}/{A}") == PathOnly()


def test_identity_from_cri() -> None:
    enricher = Enricher(Found(IdentitySource.CRI))
    assert identity_fields(ask(enricher, A, f"{POD}/{A}")) == {
        "identity": "cri", "pod": "web-0", "namespace": "shop", "container": "app",
        "image": "registry.local/web:1", "sandbox": False,
    }
    assert enricher.asked == [(A, f"{POD}/{A}")]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [(Found(IdentitySource.CGROUP_PATH, "runtime unreachable"), "runtime unreachable"),
     (Found(None, "no pod"), "no pod"),
     (TimeoutError("CRI call timed out"), "CRI call timed out")],
)
def test_identity_when_the_enricher_cannot_tell(answer: Found | Exception, reason: str) -> None:
    fields = identity_fields(ask(Enricher(answer), A, f"{POD}/{A}"))
    assert fields == {"identity": "cgroup-path", "identity_reason": reason}


def test_lines_carry_the_enrichment(tmp_path: Path) -> None:
    s = setup(tmp_path, enricher=Enricher(Found(IdentitySource.CRI)))
    s.core.adopt([container(10, f"{POD}/{A}")])
    s.backend.batches = [[exec_event(10)]]
    s.core.step(0)
    s.lines.finish(s.core)
    traced, line, summary, _stats = s.out
    assert (traced["pod"], line["pod"], line["identity"]) == ("web-0", "web-0", "cri")
    assert (summary["container"], summary["namespace"]) == ("app", "shop")


class SlowEnricher(Enricher):
    """Asks a runtime: the core's worker does, and lines wait for its answer."""

    asks_runtime = True

    def __init__(self, answer: Found) -> None:
        super().__init__(answer)
        self.release = threading.Event()

    def lookup(self, container_id: str, cgroup_path: str | None = None) -> Found:
        self.release.wait(10)
        return super().lookup(container_id, cgroup_path)


def test_lines_wait_for_the_identity_off_the_loop(tmp_path: Path) -> None:
    enricher = SlowEnricher(Found(IdentitySource.CRI))
    s = setup(tmp_path, enricher=enricher)
    s.core.adopt([container(10, f"{POD}/{A}")])
    s.backend.batches = [[exec_event(10)]]
    s.core.step(0)  # the loop does not wait for the lookup
    assert s.out == [] and s.lines.held == 2
    enricher.release.set()
    assert s.core.enrichment.wait(10)
    s.core.step(0)
    assert [(line["type"], line["pod"]) for line in s.out] == [("traced", "web-0"),
                                                                ("exec", "web-0")]
    s.core.enrichment.close()


# --- the loop -----------------------------------------------------------------------------


def test_run_traces_new_containers_and_summarises(tmp_path: Path) -> None:
    s = setup(tmp_path)
    s.backend.batches = [
        [CgroupEvent("mkdir", 30, 4, f"/{POD}/{A}", 0, traced=True), exec_event(30)],
        [CgroupEvent("mkdir", 31, 4, f"/{POD}/{B}", 0), exec_event(31),
         exec_event(77, "/bin/outside")],
    ]
    s.backend.counts = {30: {GETPPID: 5}}
    s.backend.full = {31}
    s.core.run(s.backend.stop)
    s.lines.finish(s.core)
    lines = s.out

    assert s.backend.traced == []  # 30 was auto-traced at mkdir, 31 did not fit
    assert [line["type"] for line in lines] == ["traced", "exec", "exec", "summary", "summary",
                                                "stats"]
    assert lines[0]["found"] == "mkdir"
    assert {line["cgroup_id"] for line in lines if line["type"] == "exec"} == {30, 31}
    summaries = {line["container_id"]: line for line in lines if line["type"] == "summary"}
    assert summaries[A]["syscalls"] == {"getppid": 5}
    assert lines[-1] == {
        "type": "stats", "backend": "scripted", "events_seen": 9, "events_dropped": 2,
        "untraced_for_capacity": 1, "unattributed_events": 1,
        "maps": [{"name": "traced", "used": 2, "capacity": 512}],
        "problems": [f"{POD}/{B} not traced: all 1 counter rows are in use"],
    }


def test_stop_deadline() -> None:
    assert Stop(deadline=0.0).reached()
    assert Stop().remaining() == 0.25
    stop = Stop()
    stop()  # as a signal handler
    assert stop.reached()


# --- the command line ---------------------------------------------------------------------


def test_parser_durations_and_defaults() -> None:
    args = parser().parse_args(["standalone", "--duration", "1m30s"])
    assert (args.duration, args.backend, args.cgroupfs, args.allow_mount) == (90.0, "auto",
                                                                              None, None)
    assert parser().parse_args(["standalone", "--no-mount"]).allow_mount is False


@pytest.mark.parametrize(
    "argv", [[], ["standalone", "--duration", "10"], ["standalone", "--backend", "perf"]]
)
def test_parser_rejects(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: podtrace-agent" in capsys.readouterr().err


def test_standalone_says_what_to_mount_and_fails(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = standalone(duration=1.0, cgroupfs=str(tmp_path), allow_mount=False, out=out, err=err)
    assert code == 1
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert line["type"] == "environment"
    assert line["cgroup"]["version"] == "unknown"
    assert "CgroupfsNotFound" in [p["reason"] for p in line["problems"]]
    assert f"--cgroupfs {tmp_path}" in err.getvalue()


# --- starting a backend -------------------------------------------------------------------


def report_choosing(name: BackendName, tracefs: str = "/sys/kernel/tracing") -> DiscoveryReport:
    return DiscoveryReport(
        kernel=KernelReport("6.18", True, tracefs),
        cgroup=CgroupReport(),
        bcc=BccCheck(True, "ok"),
        backend=BackendReport(name, "auto: ok"),
    )


class Factory:
    """Backends that fail to start for the names in `failing`."""

    def __init__(self, *failing: BackendName) -> None:
        self.failing = failing
        self.made: list[BackendName] = []

    def __call__(self, name: BackendName, kubepods: Any, tracefs: str) -> Any:
        self.made.append(name)
        factory = self

        class Started:
            def start(self) -> None:
                if name in factory.failing:
                    raise BackendError(f"{name} refused: verifier says no")

        return Started()


ROOT = KubepodsRoot(Path("/sys/fs/cgroup"), "kubepods", 44, 1)


def test_start_backend_as_chosen() -> None:
    make = Factory()
    backend, report = start_backend(report_choosing(BackendName.BCC), "auto", ROOT, make)
    assert backend is not None and make.made == [BackendName.BCC]
    assert report.backend == BackendReport(BackendName.BCC, "auto: ok")


def test_auto_falls_back_to_ftrace_when_bcc_fails_to_start() -> None:
    make = Factory(BackendName.BCC)
    backend, report = start_backend(report_choosing(BackendName.BCC), "auto", ROOT, make)
    assert backend is not None and make.made == [BackendName.BCC, BackendName.FTRACE]
    assert report.backend.name is BackendName.FTRACE
    assert "bcc failed to start (bcc refused: verifier says no)" in report.backend.reason


@pytest.mark.parametrize(
    ("requested", "chosen", "failing", "made"),
    [("bcc", BackendName.BCC, (BackendName.BCC,), [BackendName.BCC]),
     ("auto", BackendName.BCC, (BackendName.BCC, BackendName.FTRACE),
      [BackendName.BCC, BackendName.FTRACE]),
     ("ftrace", BackendName.FTRACE, (BackendName.FTRACE,), [BackendName.FTRACE])],
)
def test_no_backend_when_what_is_asked_for_fails(
    requested: str, chosen: BackendName, failing: tuple[BackendName, ...],
    made: list[BackendName],
) -> None:
    make = Factory(*failing)
    backend, report = start_backend(
        report_choosing(chosen), requested, ROOT, make  # type: ignore[arg-type]
    )
    assert backend is None and make.made == made
    assert report.backend.name is BackendName.NONE
    assert "verifier says no" in report.backend.reason
