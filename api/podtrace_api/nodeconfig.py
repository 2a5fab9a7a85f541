"""The node-config contract: how the operator names sources in NodeTracer.spec
and how the agent turns a source's `observe` into the probe mask it programs
into the BPF `traced` map. The bit values are mirrored in the agent's
bpf/events.h; a kernel-tier test checks that the two agree."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntFlag

from .nodetracer import SourceKind
from .observe import ObserveSpec, Rule, SyscallMode


class Probe(IntFlag):
    SYSCALLS = 1 << 0
    EXEC = 1 << 1
    EXIT = 1 << 2
    OPEN = 1 << 3
    CONNECT = 1 << 4


def source_id(kind: SourceKind | str, name: str, namespace: str | None = None) -> str:
    """The id of a source as it appears in NodeTracer.spec.

    >>> source_id("ContainerTrace", "rec", "shop")
    'ContainerTrace/shop/rec'
    >>> source_id("TracingPolicy", "shells")
    'TracingPolicy/shells'
    """
    kind = SourceKind(kind)
    if kind is SourceKind.CONTAINER_TRACE:
        if not namespace:
            raise ValueError("a ContainerTrace source needs its namespace")
        return f"{kind.value}/{namespace}/{name}"
    return f"{kind.value}/{name}"


def probe_mask(observe: ObserveSpec, rules: Iterable[Rule] = ()) -> Probe:
    """The probes one source needs: what it observes plus what its rules match on."""
    mask = Probe(0)
    for rule in rules:
        if rule.exec_filenames:
            mask |= Probe.EXEC
        if rule.syscalls:
            mask |= Probe.SYSCALLS
        if rule.open_path_prefixes:
            mask |= Probe.OPEN
    if observe.syscalls.mode != SyscallMode.NONE:
        mask |= Probe.SYSCALLS
    if observe.processes.exec:
        mask |= Probe.EXEC
    if observe.processes.exit:
        mask |= Probe.EXIT
    if observe.file_opens is not None:
        mask |= Probe.OPEN
    if observe.connects is not None:
        mask |= Probe.CONNECT
    return mask


def combined_mask(sources: Iterable[tuple[ObserveSpec, Iterable[Rule]]]) -> Probe:
    """The union of probes for a container selected by several sources."""
    mask = Probe(0)
    for observe, rules in sources:
        mask |= probe_mask(observe, rules)
    return mask
