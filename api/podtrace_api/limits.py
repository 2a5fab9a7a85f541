"""Limits of the kernel side that admission enforces, declared once.

The CRD bounds of the fields below are these numbers, so an object admission
accepts always fits what the agent can program into BPF. The BPF program's own
copies live in agent/podtrace_agent/bpf/events.h; tests/unit/test_limits.py
fails when the two differ.

What admission cannot see (bytes rather than characters in a path, the
tables one node shares between all sources) the agent handles per source: the
source is reported not applied, with the reason, and every other source keeps
tracing (see `NotAppliedReason`).
"""

from __future__ import annotations

from enum import StrEnum

# One open path prefix, in bytes (events.h PREFIX_MAX). Admission counts
# characters: a prefix of non-ASCII characters can pass it and still be too
# long for the kernel, which the agent then reports per source.
OPEN_PREFIX_BYTES = 64
# Distinct open path prefixes one source may ask for (fileOpens and rules
# together): the default size of a node's shared prefix table (events.h MAX_PREFIXES).
OPEN_PREFIXES_PER_SOURCE = 8
# Destination ports one source may filter connects on (events.h MAX_PORTS).
CONNECT_PORTS_PER_SOURCE = 16
# The longest exec filename the kernel side reports whole (events.h MAX_FILENAME
# minus the NUL): a rule naming a longer file could never match.
EXEC_FILENAME_BYTES = 255
# Tables whose size a flag of the agent sets: the bitmask of a traced cgroup
# holds at most 32 prefix or port entries.
MAX_TABLE_ENTRIES = 32


class NotAppliedReason(StrEnum):
    """Why an agent did not apply a source to a container."""

    # The source asks for more than the kernel side can ever do (e.g. a prefix
    # of more than OPEN_PREFIX_BYTES bytes): fix the source.
    LIMIT_EXCEEDED = "LimitExceeded"
    # A node table is full (traced cgroups, counter rows, prefixes, ports):
    # retried every second; raise the agent's table flags or trace less.
    CAPACITY_EXCEEDED = "CapacityExceeded"
    # The backend failed for another reason: retried every second.
    APPLY_FAILED = "ApplyFailed"

# Syscall numbers the per-container counters cover (events.h NR_SYSCALLS_MAX).
SYSCALL_NUMBERS = 512
