"""What a sys_enter hook pays for, piece by piece (issue 12 part 2's profile).
Prints figures; passes or fails nothing.

Small BCC programs on the raw tracepoint sys_enter, each doing one of the
things podtrace's hook may do, measured interleaved like syscall_overhead.py
(getppid loop outside kubepods, thread CPU time, minimum over rounds), as ns
added to "no tracer" and as a ratio to the empty program (the floor):

  empty                  program entry and exit only (the floor)
  array lookup           one BPF array lookup (the verifier inlines it)
  per-CPU cache hit      podtrace's membership cache: two array lookups, compare
  current task           bpf_get_current_task(): the cheapest helper call
  ancestor cgroup        bpf_get_current_ancestor_cgroup_id(level) (podtrace before)
  cgroup id              bpf_get_current_cgroup_id()
  hash miss              one lookup in a 512-entry hash map, key not there
  cgroup id + hash miss  what an untraced container's task paid per syscall before

Run as root:  .venv/bin/python bench/hot_path.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from common import Hierarchy, build, need_root
from syscall_overhead import Runner

PROBE = "RAW_TRACEPOINT_PROBE(sys_enter) {{ {body} }}"
VARIANTS = {
    "empty": ("", "return 0;"),
    "array lookup": ("BPF_ARRAY(a, u64, 1);",
                     "int k = 0; u64 *v = a.lookup(&k); return v && *v == 5;"),
    "per-CPU cache hit": (
        "struct m { u64 task, gen, id; }; BPF_PERCPU_ARRAY(c, struct m, 1); BPF_ARRAY(g, u64, 1);",
        "int k = 0; struct m *e = c.lookup(&k); u64 *n = g.lookup(&k); if (!e || !n) return 0;"
        " if (e->task != ctx->args[0] || e->gen != *n) { e->task = ctx->args[0]; e->gen = *n;"
        " e->id = 0; } return e->id != 0;"),
    "current task": ("", "return bpf_get_current_task() == 12345;"),
    "ancestor cgroup": ("", "return bpf_get_current_ancestor_cgroup_id(1) == 12345;"),
    "cgroup id": ("", "return bpf_get_current_cgroup_id() == 12345;"),
    "hash miss": ("BPF_HASH(t, u64, u64, 512);",
                  "u64 k = 77; return t.lookup(&k) != 0;"),
    "cgroup id + hash miss": ("BPF_HASH(t, u64, u64, 512);",
                              "u64 k = bpf_get_current_cgroup_id(); return t.lookup(&k) != 0;"),
}  # fmt: skip


def measure(calls: int = 300_000, rounds: int = 7) -> dict[str, Any]:
    from bcc import BPF

    loop = build("getppid_loop")
    programs = {}
    samples: dict[str, list[float]] = {"no tracer": []}
    with Hierarchy() as h:
        runner = Runner(loop, h.outside())
        try:
            for name, (maps, body) in VARIANTS.items():
                bpf = BPF(text=maps + PROBE.format(body=body))
                bpf.detach_raw_tracepoint(b"sys_enter")
                programs[name] = bpf
                samples[name] = []
            for _ in range(rounds):
                for name in samples:
                    bpf = programs.get(name)
                    if bpf is not None:
                        bpf.attach_raw_tracepoint(tp=b"sys_enter",
                                                  fn_name=b"raw_tracepoint__sys_enter")
                    samples[name].append(runner.run(calls)[0])
                    if bpf is not None:
                        bpf.detach_raw_tracepoint(b"sys_enter")
        finally:
            runner.close()
            for bpf in programs.values():
                bpf.cleanup()
    base = min(samples["no tracer"])
    floor = min(samples["empty"]) - base
    return {"calls": calls, "rounds": rounds, "steps": {
        name: {"min_ns": min(v), "median_ns": statistics.median(v), "added_ns": min(v) - base,
               "floor_ratio": (min(v) - base) / floor if floor > 0 else float("nan")}
        for name, v in samples.items()}}  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    print(f"sys_enter pieces, getppid outside kubepods, {result['calls']:,} calls x "
          f"{result['rounds']} rounds")
    for name, row in result["steps"].items():
        print(f"  {name:<24}{row['min_ns']:8.1f} ns {row['added_ns']:+8.1f} "
              f"{row['floor_ratio']:6.2f}x floor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    need_root()
    result = measure(args.calls, args.rounds)
    print(json.dumps(result, indent=1)) if args.json else print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
