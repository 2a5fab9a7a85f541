"""Which syscalls were seen, as a short string: a bitmap of syscall numbers in
base64. A source's results list its most frequent syscalls by name, but its
seccomp profile needs every one it saw; this says which in at most 88
characters, where a list of names could take 30 times that.

Bit n (byte n // 8, bit n % 8) is syscall number n of the node's native
architecture (the node's `kubernetes.io/arch`); trailing zero bytes are left
out. Numbers from SYSCALL_NUMBERS on (none on the common architectures) are
not represented.

    >>> encode([0, 1, 59])
    'AwAAAAAAAAg='
    >>> sorted(decode("AwAAAAAAAAg="))
    [0, 1, 59]
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from .limits import SYSCALL_NUMBERS

MAX_CHARS = 4 * ((SYSCALL_NUMBERS // 8 + 2) // 3)  # base64 of SYSCALL_NUMBERS bits
PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"


def encode(numbers: Iterable[int]) -> str:
    """The bitmap of `numbers` below SYSCALL_NUMBERS ("" for none)."""
    bits = bytearray(SYSCALL_NUMBERS // 8)
    for n in numbers:
        if 0 <= n < SYSCALL_NUMBERS:
            bits[n // 8] |= 1 << (n % 8)
    return base64.b64encode(bytes(bits).rstrip(b"\0")).decode()


def decode(text: str) -> set[int]:
    """The numbers in a bitmap; an unreadable one is empty."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return set()
    return {i * 8 + b for i, byte in enumerate(raw) for b in range(8) if byte >> b & 1}
