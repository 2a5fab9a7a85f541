"""Member offsets of kernel structs from the running kernel's BTF.

Why: BCC 0.26 compiles against the installed kernel headers (Debian's 6.1 here),
which do not describe the running kernel's structs, and it has no CO-RE. The
BPF program still needs two fields of `task_struct` (real_parent->tgid for the
ppid, exit_code at exit). Reading their byte offsets from /sys/kernel/btf/vmlinux
and passing them as cflags is CO-RE done by hand: correct for the kernel that
runs, whatever headers compiled the program.

The format is the kernel's Documentation/bpf/btf.rst: a header, then a type
section of `struct btf_type` records each followed by kind-specific data, then
a string section.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
# magic version flags hdr_len type_off type_len str_off str_len
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")  # name_off info size_or_type
_MEMBER = struct.Struct("<III")  # name_off type offset

KIND_STRUCT = 4
KIND_UNION = 5
# Bytes of kind-specific data after struct btf_type, per kind; `None` means
# `vlen` records of the given size.
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_EXTRA_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(ValueError):
    """The BTF blob is malformed or lacks what was asked."""


def _types(data: bytes) -> tuple[list[tuple[int, int, int, int]], bytes]:
    """(name_off, kind, vlen | kind_flag << 16, offset of the record) per type id
    (index 0 is the void type), and the string section."""
    if len(data) < _HEADER.size:
        raise BtfError("BTF blob too short")
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(
        data
    )
    if magic != BTF_MAGIC:
        raise BtfError(f"bad BTF magic {magic:#x}")
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    types: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)]
    while pos < end:
        name_off, info, _ = _TYPE.unpack_from(data, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        types.append((name_off, kind, vlen | kflag << 16, pos))
        pos += _TYPE.size + _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_VLEN.get(kind, 0) * vlen
    return types, strings


def _name(strings: bytes, off: int) -> str:
    return strings[off : strings.index(b"\0", off)].decode()


def member_offsets(data: bytes, struct_name: str, members: Iterable[str]) -> dict[str, int]:
    """Byte offsets of `members` of `struct struct_name`, looking through
    anonymous struct/union members. Raises BtfError for a missing member or a
    bitfield."""
    types, strings = _types(data)
    wanted = set(members)
    found: dict[str, int] = {}

    def walk(type_id: int, base_bits: int) -> None:
        _, _, vlen_kflag, pos = types[type_id]
        vlen, kflag = vlen_kflag & 0xFFFF, vlen_kflag >> 16
        for i in range(vlen):
            name_off, member_type, offset = _MEMBER.unpack_from(data, pos + _TYPE.size + 12 * i)
            bits = base_bits + (offset & 0xFFFFFF if kflag else offset)
            if name_off == 0:
                if types[member_type][1] in (KIND_STRUCT, KIND_UNION):
                    walk(member_type, bits)
                continue
            name = _name(strings, name_off)
            if name in wanted and name not in found:
                if (kflag and offset >> 24) or bits % 8:
                    raise BtfError(f"{struct_name}.{name} is a bitfield")
                found[name] = bits // 8

    for type_id, (name_off, kind, vlen_kflag, _) in enumerate(types):
        if kind == KIND_STRUCT and vlen_kflag & 0xFFFF and _name(strings, name_off) == struct_name:
            walk(type_id, 0)
            break
    else:
        raise BtfError(f"struct {struct_name} not in BTF")
    if missing := wanted - found.keys():
        raise BtfError(f"struct {struct_name} has no member {', '.join(sorted(missing))}")
    return found


# The program's offset knobs: macro -> (struct, member).
OFFSETS = {
    "TASK_REAL_PARENT_OFF": ("task_struct", "real_parent"),
    "TASK_TGID_OFF": ("task_struct", "tgid"),
    "TASK_EXIT_CODE_OFF": ("task_struct", "exit_code"),
    # x86_64 syscall arguments 0..2 (other architectures: no such members,
    # and the program falls back to the classic tracepoint's args[]).
    "PT_REGS_DI_OFF": ("pt_regs", "di"),
    "PT_REGS_SI_OFF": ("pt_regs", "si"),
    "PT_REGS_DX_OFF": ("pt_regs", "dx"),
}


def program_offsets(data: bytes) -> dict[str, int]:
    """The OFFSETS knobs found in `data`, each struct's all or none."""
    found: dict[str, int] = {}
    for struct_name in dict.fromkeys(s for s, _ in OFFSETS.values()):
        macros = {m: member for m, (s, member) in OFFSETS.items() if s == struct_name}
        try:
            offsets = member_offsets(data, struct_name, macros.values())
        except BtfError:
            continue
        found |= {macro: offsets[member] for macro, member in macros.items()}
    return found

