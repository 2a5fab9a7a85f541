"""BPF map memory of podtrace's bcc program as the kernel accounts it (each
map's fdinfo `memlock`, the figure `bpftool map show` prints) on this
machine's possible CPUs, and computed for 64 and 128 with the agent's own
projection (podtrace_agent.bpf.memory: only per-CPU parts grow with CPUs).
Reports the layout of the program in the tree when it runs (issue 12 part 3).

Run as root:  PYTHONPATH=tests .venv/bin/python bench/bpf_memory.py
"""

from __future__ import annotations

from typing import Any

from common import Hierarchy, mib, need_root

from podtrace_agent.bpf.memory import per_cpu_bytes, projected

CPUS = (64, 128)
TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
              10: "lru_percpu_hash", 22: "queue", 27: "ringbuf"}  # fmt: skip


def of_backend(backend: Any) -> dict[str, Any]:
    """Every map of a started BccBackend, by name, and the totals."""
    from bcc.utils import get_possible_cpus

    here = len(get_possible_cpus())
    maps = backend.map_memory()
    rows = {
        m.name: {"type": TYPE_NAMES.get(m.map_type, str(m.map_type)),
                 "max_entries": m.max_entries, "value_size": m.value_size,
                 "memlock": m.memlock, "per_cpu_bytes": per_cpu_bytes(m),
                 **{f"memlock_{n}cpus": projected([m], here, n) for n in CPUS}}
        for m in maps
    }  # fmt: skip
    totals: dict[str, Any] = {"possible_cpus": here, "total": sum(m.memlock for m in maps)}
    for n in CPUS:
        totals[f"total_{n}cpus"] = projected(maps, here, n)
    return {"maps": rows, **totals}


def print_table(memory: dict[str, Any]) -> None:
    here = memory["possible_cpus"]
    print(f"BPF map memory (fdinfo memlock) at {here} possible CPUs; computed for "
          + " and ".join(map(str, CPUS)))
    print(f"{'map':<16}{'type':<14}{'entries':>9}{f'{here} CPUs':>12}"
          + "".join(f"{f'{n} CPUs':>12}" for n in CPUS))
    for name, row in sorted(memory["maps"].items(), key=lambda kv: -kv[1]["memlock"]):
        print(f"{name:<16}{row['type']:<14}{row['max_entries']:>9}{mib(row['memlock']):>11.2f}M"
              + "".join(f"{mib(row[f'memlock_{n}cpus']):>11.2f}M" for n in CPUS))
    print(f"{'total':<39}{mib(memory['total']):>11.2f}M"
          + "".join(f"{mib(memory[f'total_{n}cpus']):>11.2f}M" for n in CPUS))


def main() -> int:
    from podtrace_agent.backend import BackendOptions
    from podtrace_agent.bpf.loader import BccBackend

    need_root()
    with Hierarchy() as h:
        backend = BccBackend(h.kubepods(), BackendOptions())
        backend.start()
        try:
            print_table(of_backend(backend))
        finally:
            backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
