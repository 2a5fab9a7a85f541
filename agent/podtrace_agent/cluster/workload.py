"""What each target's workload did, for seccomp profiles: the syscalls counted
after its runtime finished setting it up. Pure.

A backend reports, per cgroup, its counts at the workload marker
(`backend.WorkloadMarker`, runc init's prctl(PR_GET_PDEATHSIG)); a syscall whose
count grew beyond that is the workload's. A container's cgroup traced since its
mkdir that has not reached the marker yet is still the runtime's: nothing of it
is recorded until the marker, or (a runtime that makes no marker) until the
container's first exec. A container traced while it ran already has everything
counted recorded, with `start_seen` false: its start-up is missing.

What a target recorded only grows (a union over its containers and reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Workload:
    """One target's workload syscalls (numbers) and whether a start of it was seen."""

    syscalls: set[int] = field(default_factory=set)
    start_seen: bool = False


def workload_syscalls(
    counts: Mapping[int, int], marker: Mapping[int, int] | None, setting_up: bool
) -> tuple[set[int], bool] | None:
    """The workload's syscalls of one container and whether its start was seen; None
    while its runtime still sets it up (`setting_up`: traced since its mkdir, no
    marker and no exec yet).

    >>> workload_syscalls({1: 5, 2: 3}, {1: 5, 2: 1}, False)
    ({2}, True)
    >>> workload_syscalls({1: 5}, None, True) is None
    True
    >>> workload_syscalls({1: 5, 3: 0}, None, False)
    ({1}, False)
    """
    if marker is not None:
        return {n for n, c in counts.items() if c > marker.get(n, 0)}, True
    if setting_up:
        return None
    return {n for n, c in counts.items() if c > 0}, False
