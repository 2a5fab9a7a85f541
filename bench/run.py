"""`make bench`: every benchmark of issue 12 in one run, one table, and
bench/results/latest.json. Prints figures; never passes or fails on time (it
exits non-zero only when a part could not run at all).

Each part runs in a child process of its own (`run.py --only PART --json F`),
so one part's memory or a crash stays its own:

  syscall   per-syscall cost against the floor, bpftrace and strace; BPF map memory
  profile   what a sys_enter hook pays for, piece by piece (helpers, map lookups)
  exec      exec throughput with and without podtrace, events vs made, the getppid burst
  cluster   the real agent against the test apiserver: its RSS and CPU, the BCC
            compile, and TracingPolicy apply -> target in the node's BPF map
  compile   the operator's pure compile step at 1,000 nodes x 100,000 pods x 1,000 policies

BENCH_QUICK=1 (or --quick) runs everything with tiny counts (seconds, not
minutes: the figures then mean nothing; the kernel tier's smoke test uses it).

Run as root:  PYTHONPATH=tests .venv/bin/python bench/run.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PARTS = ("syscall", "profile", "exec", "cluster", "compile")
LATEST = BENCH / "results" / "latest.json"

# Counts per part: (full, quick).
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "syscall": ({"calls": 1_000_000, "rounds": 9},
                {"calls": 20_000, "rounds": 2, "strace_calls": 1_000}),
    "profile": ({"calls": 300_000, "rounds": 7}, {"calls": 20_000, "rounds": 1}),
    "exec": ({"execs": 2_000, "rounds": 3, "burst": 1_000_000},
             {"execs": 100, "rounds": 1, "burst": 20_000}),
    "cluster": ({"rounds": 20, "window": 10.0, "containers": 50, "execs": 3_000},
                {"rounds": 2, "window": 1.0, "containers": 3, "execs": 50}),
    "compile": ({"pods_n": 100_000, "policies": 1_000, "nodes_n": 1_000, "pod_events": 50,
                 "policy_edits": 3},
                {"pods_n": 500, "policies": 10, "nodes_n": 10, "pod_events": 3,
                 "policy_edits": 1}),
}  # fmt: skip


def run_part(part: str, quick: bool) -> dict[str, Any]:
    """One part in this process (the child), its figures as a dict."""
    settings = SETTINGS[part][quick]
    if part == "syscall":
        import syscall_overhead

        result = syscall_overhead.measure(**settings)
        syscall_overhead.print_table(result)
        import bpf_memory

        bpf_memory.print_table(result["memory"])
        return result
    if part == "profile":
        import hot_path

        result = hot_path.measure(**settings)
        hot_path.print_table(result)
        return result
    if part == "exec":
        import exec_throughput

        result = exec_throughput.measure(**settings)
        exec_throughput.print_table(result)
        return result
    if part == "cluster":
        import agent_cost
        import operator_latency
        from cluster_session import session

        with session() as s:
            latency = operator_latency.measure(s, settings["rounds"])
            operator_latency.print_table(latency)
            cost = agent_cost.measure(s, settings["window"], settings["containers"],
                                      settings["execs"])  # fmt: skip
            agent_cost.print_table(cost)
        return {"latency": latency, "agent": cost}
    import compile_scale

    result = compile_scale.measure(**settings)
    compile_scale.print_table(result)
    return result


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")  # fmt: skip
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1),
            "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?")}  # fmt: skip


def _fmt(value: float, unit: str = "", digits: int = 1) -> str:
    return f"{value:,.{digits}f}{unit}"


def table(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The one table: (what, figure) rows."""
    rows: list[tuple[str, str]] = []
    s = r["syscall"]
    rows.append(("-- per-syscall cost (getppid)", f"min ns / added ns / x floor, {s['rounds']} "
                 f"rounds of {s['calls']:,}"))
    for label, row in s["scenarios"].items():
        clock = " (wall)" if row["clock"] == "wall" else ""
        rows.append((f"  {label}", f"{row['min_ns']:.1f} / {row['added_ns']:+.1f} / "
                     f"{row['floor_ratio']:.2f}x (median {row['floor_ratio_median']:.2f}x){clock}"))
    rows.append(("  other tracers meanwhile", ", ".join(s["other_tracers"]) or "none"))
    rows.append(("  bcc counted exactly", f"{s['bcc_counted_getppid']:,} of "
                 f"{s['bcc_made_getppid']:,} getppid"))
    if s["ftrace_made"]:
        rows.append(("  ftrace lost (counted)", f"{s['ftrace_lost']:,} of {s['ftrace_made']:,}"))
    m = s["memory"]
    rows.append(("-- BPF map memory (memlock)", f"{_fmt(m['total'] / 2**20, ' MiB', 2)} at "
                 f"{m['possible_cpus']} CPUs; {_fmt(m['total_64cpus'] / 2**20, ' MiB', 2)} at 64; "
                 f"{_fmt(m['total_128cpus'] / 2**20, ' MiB', 2)} at 128"))
    p = r["profile"]
    rows.append(("-- sys_enter pieces (outside)", "added ns / x floor"))
    for label, row in p["steps"].items():
        rows.append((f"  {label}", f"{row['added_ns']:+.1f} / {row['floor_ratio']:.2f}x"))
    e = r["exec"]
    rows.append(("-- exec /bin/true, traced", "execs/s without -> with; events / made / dropped"))
    for key in sorted(k for k in e if k.startswith("spawners_")):
        x = e[key]
        rows.append((f"  {x['spawners']} spawner(s)", f"{x['execs_per_s_without']:,.0f} -> "
                     f"{x['execs_per_s_with']:,.0f} ({x['ratio']:.2f}x); {x['received']:,} / "
                     f"{x['made']:,} / {x['dropped_counted']:,}"))
    b = e["burst"]
    rows.append(("  getppid burst", f"{b['counted']:,} of {b['made']:,} counted"))
    a, lat = r["cluster"]["agent"], r["cluster"]["latency"]
    rows.append(("-- podtrace-agent run", "CPU % of one CPU, RSS"))
    rows.append(("  idle", f"{a['idle']['cpu_percent']:.1f} %, {a['idle']['rss_mib']:.0f} MiB"))
    rows.append((f"  tracing {a['containers']} containers",
                 f"{a['tracing']['cpu_percent']:.1f} %, {a['tracing']['rss_mib']:.0f} MiB"))
    x = a["exec_load"]
    rows.append((f"  exec load ({x['execs_per_s']:,.0f}/s)",
                 f"{x['cpu_percent']:.1f} %, {x['rss_mib']:.0f} MiB"))
    rows.append(("  BCC compile at start-up", f"{a['compile']['seconds']:.1f} s, peak RSS "
                 f"{a['compile']['peak_rss_mib']:.0f} MiB"))
    rows.append(("-- control plane", ""))
    ap = lat["apply_to_map_s"]
    rows.append((f"  kubectl apply -> BPF map ({lat['rounds']})",
                 f"median {ap['median'] * 1000:.0f} ms, p95 {ap['p95'] * 1000:.0f} ms"))
    rm = lat["delete_to_out_of_map_s"]
    rows.append(("  kubectl delete -> out of map",
                 f"median {rm['median'] * 1000:.0f} ms, p95 {rm['p95'] * 1000:.0f} ms"))
    c = r["compile"]
    rows.append((f"  compile {c['nodes']:,} nodes x {c['pods']:,} pods x {c['policies']:,} pol.",
                 f"{c['scratch_s']:.1f} s from scratch, index {c['index_build_s']:.1f} s"))
    rows.append(("  per event", f"pod {c['pod_event_ms']:.2f} ms, policy edit "
                 f"{c['policy_edit_ms']:,.0f} ms"))
    rows.append(("  operator compile RSS", f"{c['rss_mib']:,.0f} MiB (peak "
                 f"{c['peak_rss_mib']:,.0f} MiB)"))
    return rows


def print_table(result: dict[str, Any]) -> None:
    rows = table(result)
    width = max(len(what) for what, _ in rows) + 2
    m = result["machine"]
    print(f"\npodtrace bench, {result['date']}: {m['cpus']} CPUs ({m['cpu']}), "
          f"{m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}"
          + (" [QUICK: figures mean nothing]" if result["quick"] else ""))
    for what, figure in rows:
        print(f"{what:<{width}}{figure}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parser.add_argument("--quick", action="store_true", default=quick)
    parser.add_argument("--out", type=Path, default=LATEST)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="run only these parts; the others' figures are kept from --out")
    parser.add_argument("--only", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (BPF, tracefs, cgroups): sudo make bench")
    if args.only:
        result = run_part(args.only, args.quick)
        args.json.write_text(json.dumps(result))
        return 0

    result: dict[str, Any] = {}
    if set(args.parts) != set(PARTS):
        result = json.loads(args.out.read_text())
        if result["quick"] != args.quick:
            sys.exit(f"{args.out} is from a {'quick' if result['quick'] else 'full'} run")
    result.update({"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                   "quick": args.quick, "machine": machine()})  # fmt: skip
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), *sys.path[1:]])}
    failed = []
    for part in args.parts:
        print(f"== {part}", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            t0 = time.monotonic()
            rc = subprocess.run([sys.executable, __file__, "--only", part, "--json", out.name]
                                + (["--quick"] if args.quick else []), env=env).returncode
            if rc:
                failed.append(part)
                continue
            result[part] = json.loads(Path(out.name).read_text())
            result[part]["part_seconds"] = round(time.monotonic() - t0, 1)
    result["seconds"] = round(time.monotonic() - started, 1)
    if failed:
        print(f"bench: parts that could not run: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"\n{result['seconds']:.0f} s; figures in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
