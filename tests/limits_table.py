"""Every CRD bound that stands for a limit of the kernel side, as a table the
tiers share: at the bound the object is admitted and traced on the real kernel
(tests/kernel/test_limits_kernel.py); one past it admission rejects it, naming
the field (tests/cluster/test_admission.py). The numbers come from
podtrace_api.limits, which tests/unit/test_limits.py ties to bpf/events.h."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podtrace_api.limits import (
    CONNECT_PORTS_PER_SOURCE,
    EXEC_FILENAME_BYTES,
    OPEN_PREFIX_BYTES,
    OPEN_PREFIXES_PER_SOURCE,
)


@dataclass(frozen=True)
class Bound:
    name: str
    kind: str  # tp (TracingPolicy) or ct (ContainerTrace)
    at: dict[str, Any]  # spec at the bound: admitted, traced
    past: dict[str, Any]  # spec one past it: rejected
    field: str  # what the rejection names


def _path(n: int) -> str:
    """An absolute path of exactly n bytes."""
    return "/" + "p" * (n - 1)


def _prefixes(n: int, tag: str = "d") -> list[str]:
    return [f"/{tag}{i}/" for i in range(n)]


def _file_opens(prefixes: list[str]) -> dict[str, Any]:
    return {"observe": {"fileOpens": {"pathPrefixes": prefixes}}}


def _ports(n: int) -> dict[str, Any]:
    return {"observe": {"connects": {"ports": list(range(1, n + 1))}}}


def _open_rule(prefixes: list[str], files: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"name": "r", "reason": "Opened",
                                       "openPathPrefixes": prefixes}]}
    if files:
        spec["observe"] = {"fileOpens": {"pathPrefixes": files}}
    return spec


def _exec_rule(filename: str) -> dict[str, Any]:
    return {"rules": [{"name": "r", "reason": "Ran", "execFilenames": [filename]}]}


CT_BASE: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}}}
N, M = OPEN_PREFIXES_PER_SOURCE, OPEN_PREFIXES_PER_SOURCE // 2

BOUNDS = [
    Bound("tp-prefix-bytes", "tp", _file_opens([_path(OPEN_PREFIX_BYTES)]),
          _file_opens([_path(OPEN_PREFIX_BYTES + 1)]), "spec.observe.fileOpens.pathPrefixes[0]"),
    Bound("tp-prefix-count", "tp", _file_opens(_prefixes(N)), _file_opens(_prefixes(N + 1)),
          "spec.observe.fileOpens.pathPrefixes"),
    Bound("tp-rule-prefix-bytes", "tp", _open_rule([_path(OPEN_PREFIX_BYTES)]),
          _open_rule([_path(OPEN_PREFIX_BYTES + 1)]), "spec.rules[0].openPathPrefixes[0]"),
    Bound("tp-rule-prefix-count", "tp", _open_rule(_prefixes(N)), _open_rule(_prefixes(N + 1)),
          "spec.rules[0].openPathPrefixes"),
    Bound("tp-prefixes-per-policy", "tp", _open_rule(_prefixes(M), _prefixes(N - M, "f")),
          _open_rule(_prefixes(M + 1), _prefixes(N - M, "f")), "spec.rules"),
    Bound("tp-port-count", "tp", _ports(CONNECT_PORTS_PER_SOURCE),
          _ports(CONNECT_PORTS_PER_SOURCE + 1), "spec.observe.connects.ports"),
    Bound("tp-exec-filename-bytes", "tp", _exec_rule(_path(EXEC_FILENAME_BYTES)),
          _exec_rule(_path(EXEC_FILENAME_BYTES + 1)), "spec.rules[0].execFilenames[0]"),
    Bound("ct-prefix-bytes", "ct", CT_BASE | _file_opens([_path(OPEN_PREFIX_BYTES)]),
          CT_BASE | _file_opens([_path(OPEN_PREFIX_BYTES + 1)]),
          "spec.observe.fileOpens.pathPrefixes[0]"),
    Bound("ct-prefix-count", "ct", CT_BASE | _file_opens(_prefixes(N)),
          CT_BASE | _file_opens(_prefixes(N + 1)), "spec.observe.fileOpens.pathPrefixes"),
    Bound("ct-port-count", "ct", CT_BASE | _ports(CONNECT_PORTS_PER_SOURCE),
          CT_BASE | _ports(CONNECT_PORTS_PER_SOURCE + 1), "spec.observe.connects.ports"),
]
