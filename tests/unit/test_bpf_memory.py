"""BPF map memory projected across CPU counts (bpf/memory.py), no kernel."""

from __future__ import annotations

import doctest

from podtrace_agent.bpf import memory
from podtrace_agent.bpf.memory import (
    ARRAY,
    HASH,
    LRU_HASH,
    PERCPU_ARRAY,
    RINGBUF,
    MapMemory,
    parse_fdinfo,
    per_cpu_bytes,
    projected,
)

ROWS = 512 * 512
MIB = 2**20


def test_docstring_examples() -> None:
    result = doctest.testmod(memory)
    assert result.attempted > 0 and result.failed == 0


def test_shared_counters_cost_the_same_on_any_node() -> None:
    shared = MapMemory("counts", ARRAY, 4, 8, ROWS, ROWS * 8 + 312)
    assert projected([shared], 2, 128) == projected([shared], 2, 2) == ROWS * 8 + 312


def test_per_cpu_counters_grow_two_mib_per_cpu() -> None:
    per_cpu = MapMemory("counts", PERCPU_ARRAY, 4, 8, ROWS, 2 * ROWS * 8 + 4096)
    assert per_cpu_bytes(per_cpu) == 2 * MIB
    assert projected([per_cpu], 2, 64) - projected([per_cpu], 2, 2) == 62 * 2 * MIB


def test_value_sizes_round_up_to_eight_per_cpu() -> None:
    scratch = MapMemory("s", PERCPU_ARRAY, 4, 1052, 1, 2 * 1056 + 320)
    assert per_cpu_bytes(scratch) == 1056


def test_hash_pays_a_spare_element_per_cpu_lru_and_ringbuf_nothing() -> None:
    assert per_cpu_bytes(MapMemory("traced", HASH, 8, 24, 512, 50224)) == 48 + 8 + 24 + 8
    assert per_cpu_bytes(MapMemory("removed", LRU_HASH, 8, 8, 2048, 164736)) == 0
    assert per_cpu_bytes(MapMemory("events", RINGBUF, 0, 0, MIB, MIB + 16384)) == 0


def test_fdinfo_of_something_else_is_no_map() -> None:
    assert parse_fdinfo("x", "pos:\t0\nflags:\t02\nmnt_id:\t15\n") is None


def test_fdinfo_of_a_kernel_map() -> None:
    text = ("pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2075\nmap_type:\t2\nkey_size:\t4\n"
            "value_size:\t8\nmax_entries:\t262144\nmap_flags:\t0x0\nmap_extra:\t0x0\n"
            "memlock:\t2097464\nmap_id:\t91\nfrozen:\t0\n")
    assert parse_fdinfo("counts", text) == MapMemory("counts", ARRAY, 4, 8, ROWS, 2097464)
