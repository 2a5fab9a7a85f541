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


# A node's `kubernetes.io/arch` → libseccomp's architecture (seccomp.Arch member).
KUBE_ARCHES = {
    "amd64": "X86_64", "arm64": "AARCH64", "386": "X86", "arm": "ARM",
    "ppc64le": "PPC64LE", "s390x": "S390X", "riscv64": "RISCV64",
    "mips64le": "MIPSEL64", "mipsle": "MIPSEL",
}


@cache
def name_of(number: int, arch: str | None = None) -> str:
    """The name of syscall `number` on a node of `arch` (its `kubernetes.io/arch`;
    None or unknown: this machine's), or `syscall_<n>` when libseccomp does not
    know it (a newer kernel than the library).

    >>> name_of(0), name_of(0, "arm64")
    ('read', 'io_setup')
    """
    seccomp = _seccomp()
    which = getattr(seccomp.Arch, KUBE_ARCHES.get(arch or "", "NATIVE"), seccomp.Arch.NATIVE)
    try:
        return seccomp.resolve_syscall(which, number).decode()
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
