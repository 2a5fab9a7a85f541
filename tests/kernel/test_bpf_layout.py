"""The ctypes mirror (bpf/wire.py) against bpf/events.h as a C compiler lays it
out: every struct's size and every field's offset and size, and the constants.
Tetragon's "alignchecker" idea: the two sides can never drift silently.

The C side is compiled by the host's cc for the host: the BPF target (clang
-target bpf) uses the same LP64 layout for these fixed-width fields, which the
kernel-tier backend tests exercise end to end.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from harness.prereq import need_binary
from podtrace_agent.bpf import wire
from podtrace_api.nodeconfig import Probe


def c_program() -> str:
    """A C program printing `struct field offset size` lines and each constant."""
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "events.h"', "int main(void) {"]
    for struct, mirror in wire.MIRRORS.items():
        lines.append(f'printf("{struct} - 0 %zu\\n", sizeof(struct {struct}));')
        for name, *_ in mirror._fields_:
            lines.append(
                f'printf("{struct} {name} %zu %zu\\n", offsetof(struct {struct}, {name}), '
                f"sizeof(((struct {struct} *)0)->{name}));"
            )
    for name in wire.C:
        lines.append(f'printf("#define {name} %lld\\n", (long long)({name}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = need_binary("cc", "apt-get install gcc")
    tmp = tmp_path_factory.mktemp("layout")
    source, binary = tmp / "layout.c", tmp / "layout"
    source.write_text(c_program())
    subprocess.run(
        [cc, "-Wall", "-Werror", f"-I{wire.BPF_DIR}", "-o", str(binary), str(source)], check=True
    )
    return subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout


def python_layout() -> str:
    lines = []
    for struct, mirror in wire.MIRRORS.items():
        lines.append(f"{struct} - 0 {ctypes.sizeof(mirror)}")
        for name, *_ in mirror._fields_:
            descriptor = getattr(mirror, name)
            lines.append(f"{struct} {name} {descriptor.offset} {descriptor.size}")
    lines += [f"#define {name} {value}" for name, value in wire.C.items()]
    return "\n".join(lines) + "\n"


def test_ctypes_mirror_matches_events_h(c_layout: str) -> None:
    assert python_layout() == c_layout


def test_probe_bits_mirror_the_api() -> None:
    assert {bit.name: int(bit) for bit in Probe} == {
        name.removeprefix("PROBE_"): value
        for name, value in wire.C.items()
        if name.startswith("PROBE_")
    }


def test_every_struct_of_events_h_is_mirrored() -> None:
    declared = {
        line.split()[1]
        for line in Path(wire.EVENTS_H).read_text().splitlines()
        if line.startswith("struct ") and line.rstrip().endswith("{")
    }
    assert declared == set(wire.MIRRORS)
