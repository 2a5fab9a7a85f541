"""BPF map memory as the kernel accounts it, and how it grows with CPUs (pure).

The kernel reports each map's memory in /proc/<pid>/fdinfo/<fd> (`memlock`,
what `bpftool map show` prints; since 6.4 the map's own mem_usage()). What a
map costs on another node differs only by its per-CPU part, which this module
derives from the map's type and sizes, following kernel/bpf/arraymap.c and
hashtab.c (`*_map_mem_usage`):

- PERCPU_ARRAY / PERCPU_HASH: `entries * round_up(value_size, 8)` per CPU;
- HASH (preallocated, not LRU): one spare element per CPU (`extra_elems`)
  plus its pointer: at most `HTAB_ELEM + round_up(key) + round_up(value) + 8`;
- ARRAY, LRU_HASH (common LRU), QUEUE, RINGBUF: nothing per CPU.

So a node's figure is the figure measured here plus that part times the
difference in possible CPUs (`projected`).

>>> counts = MapMemory("counts", ARRAY, 4, 8, 262144, 2097472)
>>> per_cpu_bytes(counts), projected([counts], 2, 128) == counts.memlock
(0, True)
>>> old = MapMemory("counts", PERCPU_ARRAY, 4, 8, 262144, 4196672)
>>> projected([old], 2, 128) // 2**20
256
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# enum bpf_map_type (include/uapi/linux/bpf.h)
HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY = 1, 2, 5, 6
LRU_HASH, LRU_PERCPU_HASH, QUEUE, RINGBUF = 9, 10, 22, 27
# sizeof(struct htab_elem) on 64-bit kernels, an upper bound (48 with its padding).
HTAB_ELEM = 48


@dataclass(frozen=True)
class MapMemory:
    """One map's shape and the memory the kernel charges for it on this node."""

    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    memlock: int


def _round8(size: int) -> int:
    return (size + 7) // 8 * 8


def per_cpu_bytes(m: MapMemory) -> int:
    """What one more possible CPU adds to the map's memory (see the module docstring)."""
    if m.map_type in (PERCPU_ARRAY, PERCPU_HASH, LRU_PERCPU_HASH):
        return m.max_entries * _round8(m.value_size)
    if m.map_type == HASH:
        return HTAB_ELEM + _round8(m.key_size) + _round8(m.value_size) + 8
    return 0


def projected(maps: Iterable[MapMemory], measured_cpus: int, cpus: int) -> int:
    """Total memory of `maps` on a node with `cpus` possible CPUs, from the
    figures measured on one with `measured_cpus`."""
    return sum(m.memlock + per_cpu_bytes(m) * (cpus - measured_cpus) for m in maps)


_FIELD = re.compile(r"^(\w+):\s*(\d+)\s*$", re.M)


def parse_fdinfo(name: str, text: str) -> MapMemory | None:
    """A map's line of /proc/<pid>/fdinfo/<fd>; None when the fd is no map.

    >>> parse_fdinfo("x", "map_type:\\t2\\nkey_size:\\t4\\nvalue_size:\\t8\\n"
    ...              "max_entries:\\t16\\nmemlock:\\t456\\n")
    MapMemory(name='x', map_type=2, key_size=4, value_size=8, max_entries=16, memlock=456)
    """
    fields = {key: int(value) for key, value in _FIELD.findall(text)}
    try:
        return MapMemory(name, fields["map_type"], fields["key_size"], fields["value_size"],
                         fields["max_entries"], fields["memlock"])
    except KeyError:
        return None
