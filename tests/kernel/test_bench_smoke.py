"""`make bench` keeps working: bench/run.py --quick (tiny counts) runs every part
end to end on the real kernel, the test apiserver and the real agent, and
writes every figure of latest.json. No figure is compared with a time: only
that each is there and a number, and that what is counted is counted exactly
(the bcc counters, the burst, exec events received or counted as dropped).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kernel_support import require_bcc, require_tracefs

from harness.prereq import missing, need_binary, need_root

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[2]
SCENARIOS = [
    "no tracer", "floor", "bcc outside kubepods", "bcc untraced container", "bcc traced",
    "ftrace untraced", "ftrace traced", "bpftrace untraced", "bpftrace traced", "strace -f -c",
    "2 threads: no tracer", "2 threads: floor", "2 threads: bcc traced",
]  # fmt: skip
SCENARIO_FIGURES = ["min_ns", "median_ns", "added_ns", "added_median_ns", "floor_ratio",
                    "floor_ratio_median"]  # fmt: skip
FIGURES = [
    "syscall.memory.total", "syscall.memory.total_64cpus", "syscall.memory.total_128cpus",
    "syscall.memory.maps.counts.memlock", "syscall.ftrace_lost",
    "profile.steps.empty.added_ns", "profile.steps.ancestor cgroup.added_ns",
    "profile.steps.per-CPU cache hit.added_ns", "profile.steps.hash miss.added_ns",
    "exec.spawners_1.execs_per_s_without", "exec.spawners_1.execs_per_s_with",
    "exec.spawners_1.received", "exec.spawners_1.dropped_counted",
    "exec.burst.counted",
    "cluster.latency.apply_to_map_s.median", "cluster.latency.apply_to_map_s.p95",
    "cluster.latency.delete_to_out_of_map_s.median",
    "cluster.agent.idle.cpu_percent", "cluster.agent.idle.rss_mib",
    "cluster.agent.tracing.cpu_percent", "cluster.agent.tracing.rss_mib",
    "cluster.agent.exec_load.cpu_percent", "cluster.agent.exec_load.rss_mib",
    "cluster.agent.exec_load.execs_per_s",
    "cluster.agent.compile.seconds", "cluster.agent.compile.peak_rss_mib",
    "compile.scratch_s", "compile.index_build_s", "compile.pod_event_ms",
    "compile.policy_edit_ms", "compile.rss_mib", "compile.peak_rss_mib",
]  # fmt: skip


def figure(result: dict[str, Any], path: str) -> float:
    value: Any = result
    for part in path.split("."):
        assert isinstance(value, dict) and part in value, f"{path}: no {part!r}"
        value = value[part]
    assert isinstance(value, int | float) and math.isfinite(value), f"{path} = {value!r}"
    return float(value)


def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    need_root("the bench (BPF, tracefs, cgroups)")
    require_bcc()
    require_tracefs()
    for tool in ("bpftrace", "strace", "bpftool", "cc"):
        need_binary(tool, "bench/install-deps (make bench installs it)")
    from harness.k8s_binaries import PrerequisiteMissing, ensure_binaries

    try:
        ensure_binaries(kubelet=False)
    except PrerequisiteMissing as exc:
        missing(str(exc))

    out = tmp_path / "latest.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick",
                          "--out", str(out)], env=env, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "podtrace bench" in run.stdout  # the one table was printed
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["machine"]["kernel"] == os.uname().release

    scenarios = result["syscall"]["scenarios"]
    assert list(scenarios) == SCENARIOS
    for name in SCENARIOS:
        for key in SCENARIO_FIGURES:
            assert math.isfinite(scenarios[name][key]), (name, key, scenarios[name][key])
    for path in FIGURES:
        figure(result, path)
    for name in result["profile"]["steps"]:  # nan when the floor added nothing: not attached
        figure(result, f"profile.steps.{name}.floor_ratio")

    s = result["syscall"]
    assert s["bcc_counted_getppid"] == s["bcc_made_getppid"] > 0
    assert s["bpftrace_counted_getppid"] > 0  # bpftrace did trace the container
    for key in (k for k in result["exec"] if k.startswith("spawners_")):
        x = result["exec"][key]
        assert x["made"] > 0 and x["received"] + x["dropped_counted"] >= x["made"], x
    assert result["exec"]["burst"]["counted"] == result["exec"]["burst"]["made"]
