"""The pure parts of pinning (bpf/pins.py) and of resuming pinned rows
(bpf/rows.orphaned_rows, tables.SharedValues.adopt), no kernel."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from podtrace_agent.bpf import pins, rows, tables
from podtrace_agent.bpf.rows import FREE, Entry, orphaned_rows
from podtrace_agent.bpf.tables import SharedValues


@pytest.mark.parametrize("module", [pins, rows, tables])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_layout_changes_with_any_source_byte_or_knob() -> None:
    base = pins.layout_id([b"int x;", b"#define A 1"], ["-DMAX_TRACED=512", "-DK=1"])
    assert base.startswith("v") and len(base) == 17
    assert pins.layout_id([b"int x;", b"#define A 1"], ["-DK=1", "-DMAX_TRACED=512"]) == base
    assert pins.layout_id([b"int x; ", b"#define A 1"], ["-DMAX_TRACED=512", "-DK=1"]) != base
    assert pins.layout_id([b"int x;#define A 1", b""], ["-DMAX_TRACED=512", "-DK=1"]) != base
    assert pins.layout_id([b"int x;", b"#define A 1"], ["-DMAX_TRACED=64", "-DK=1"]) != base


def test_instance_names_stay_one_directory() -> None:
    assert pins.instance_name("node-1.example") == "node-1.example"
    for hostile in ("a/b", "..", ".", "", "x\0y"):
        name = pins.instance_name(hostile)
        assert "/" not in name and name not in ("", ".", "..") and "\0" not in name


def test_bpffs_found_only_at_its_mount_point() -> None:
    mounts = "sysfs /sys sysfs rw 0 0\nnone /sys/fs/bpf/x bpf rw 0 0\n"
    assert not pins.is_bpffs(Path("/sys/fs/bpf"), mounts)
    assert pins.is_bpffs(Path("/sys/fs/bpf"), mounts + "bpf /sys/fs/bpf bpf rw 0 0\n")


def test_orphaned_rows_are_owned_but_held_by_no_entry() -> None:
    entries = {10: Entry(1, 0), 11: Entry(1, 1)}
    owners = {0: 10, 1: 11, 2: FREE, 3: 12, 4: 10}  # 3: untraced cgroup, 4: stale owner
    assert orphaned_rows(entries, owners) == {3, 4}
    assert orphaned_rows({}, {0: FREE}) == set()


def test_adopted_values_are_released_with_their_last_reference() -> None:
    prefixes = SharedValues[str](8)
    prefixes.adopt(3, "/etc/")
    prefixes.adopt(3, "/etc/")
    bits, placed = prefixes.acquire(["/etc/", "/tmp/"])
    assert bits == 0b1001 and placed == [(0, "/tmp/")]
    assert prefixes.release(0b1000) == [] and prefixes.release(0b1000) == []
    assert prefixes.release(0b1001) == [0, 3]
    with pytest.raises(ValueError):
        prefixes.adopt(0, "/a/"), prefixes.adopt(0, "/b/")
