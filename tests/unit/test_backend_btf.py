"""Reading struct member offsets from BTF, on a BTF blob built here (the
layout of Documentation/bpf/btf.rst), plus the running kernel's when present."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from podtrace_agent.bpf import btf


class Blob:
    """A tiny BTF writer: types in order (ids from 1) and a string table."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""

    def name(self, text: str) -> int:
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def int_(self, name: str) -> None:
        self.types += struct.pack("<III", self.name(name), 1 << 24, 4) + struct.pack("<I", 32)

    def ptr(self, target: int) -> None:
        self.types += struct.pack("<III", 0, 2 << 24, target)

    def compound(self, kind: int, name: str, size: int, members: list[tuple[str, int, int]],
                 kflag: bool = False) -> None:
        info = kind << 24 | len(members) | (1 << 31 if kflag else 0)
        self.types += struct.pack("<III", self.name(name) if name else 0, info, size)
        for member, type_id, offset in members:
            self.types += struct.pack("<III", self.name(member) if member else 0, type_id, offset)

    def bytes(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


@pytest.fixture
def blob() -> bytes:
    b = Blob()
    b.int_("int")  # 1
    b.ptr(3)  # 2
    b.compound(btf.KIND_STRUCT, "task_struct", 0, [])  # 3: a forward-like empty entry first
    b.compound(btf.KIND_UNION, "", 4, [("tgid", 1, 0), ("alias", 1, 0)])  # 4: anonymous
    b.compound(
        btf.KIND_STRUCT, "task_struct", 40,
        [("state", 1, 0), ("", 4, 64), ("exit_code", 1, 128), ("real_parent", 2, 192),
         ("bits", 1, 3 << 24 | 256)],
        kflag=True,
    )  # 5
    return b.bytes()


def test_offsets_through_anonymous_members(blob: bytes) -> None:
    assert btf.member_offsets(blob, "task_struct", ["tgid", "real_parent", "exit_code"]) == {
        "tgid": 8, "real_parent": 24, "exit_code": 16,
    }


def test_missing_member_and_bitfield_are_errors(blob: bytes) -> None:
    with pytest.raises(btf.BtfError, match="no member nope"):
        btf.member_offsets(blob, "task_struct", ["nope"])
    with pytest.raises(btf.BtfError, match="bitfield"):
        btf.member_offsets(blob, "task_struct", ["bits"])
    with pytest.raises(btf.BtfError, match="not in BTF"):
        btf.member_offsets(blob, "mm_struct", ["x"])
    with pytest.raises(btf.BtfError, match="magic"):
        btf.member_offsets(b"\0" * 24, "task_struct", ["tgid"])


def test_program_offsets_take_each_struct_whole(blob: bytes) -> None:
    # task_struct is complete in the blob; pt_regs is missing, so no PT_REGS_* knob.
    assert btf.program_offsets(blob) == {
        "TASK_REAL_PARENT_OFF": 24, "TASK_TGID_OFF": 8, "TASK_EXIT_CODE_OFF": 16,
    }


@pytest.mark.skipif(not btf.VMLINUX.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_running_kernel() -> None:
    offsets = btf.program_offsets(Path(btf.VMLINUX).read_bytes())
    assert set(offsets) == set(btf.OFFSETS)
    assert all(0 <= v < 16384 for v in offsets.values())
