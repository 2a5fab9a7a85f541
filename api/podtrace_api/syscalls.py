"""Syscall names and numbers from libseccomp's resolver, never a hand-written
table: libseccomp tracks every architecture's syscall table release by release.

The Python binding is Debian's python3-seccomp (not on PyPI); it is imported
lazily so that code which never resolves a syscall runs without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from types import ModuleType


class SeccompUnavailable(RuntimeError):
    """libseccomp's Python binding is missing."""


def _seccomp() -> ModuleType:
    try:
        import seccomp
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise SeccompUnavailable(
            "libseccomp's Python binding is missing: apt-get install python3-seccomp "
            "(and run scripts/make-venv so the venv can import it)"
        ) from err
    return seccomp


@cache
def name_of(number: int) -> str:
    """The native architecture's name of syscall `number`, or `syscall_<n>` when
    libseccomp does not know it (a newer kernel than the library).

    >>> name_of(0)
    'read'
    """
    seccomp = _seccomp()
    try:
        return seccomp.resolve_syscall(seccomp.Arch.NATIVE, number).decode()
    except ValueError:
        return f"syscall_{number}"


@cache
def number_of(name: str) -> int | None:
    """The native number of syscall `name`, or None when it does not exist here.

    >>> number_of("openat")
    257
    """
    seccomp = _seccomp()
    number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
    return None if number < 0 else int(number)


def unknown(names: Iterable[str]) -> list[str]:
    """The names in `names` that libseccomp does not know, sorted."""
    return sorted({name for name in names if number_of(name) is None})
