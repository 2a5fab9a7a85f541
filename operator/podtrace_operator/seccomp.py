"""Seccomp profiles (the OCI / Kubernetes `localhost` JSON format) that allow
exactly the syscalls a ContainerTrace observed. Pure.

The profile lists the seccomp architectures of the nodes the trace ran on. One
filter cannot hold architectures of both byte orders (libseccomp refuses with
EDOM, so runc would refuse the profile), so when the nodes mix them (s390x with
amd64, say) the profile says it with Docker's `archMap` instead: each entry a
native architecture and its sub-architectures, of which the runtime's loader
(containerd's and CRI-O's, both from moby's) takes only the node's own.

    >>> print(profile_json(["read", "write"], "SCMP_ACT_ERRNO", ["amd64"]))
    {
      "defaultAction": "SCMP_ACT_ERRNO",
      "architectures": [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32"
      ],
      "syscalls": [
        {
          "names": [
            "read",
            "write"
          ],
          "action": "SCMP_ACT_ALLOW"
        }
      ]
    }
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# Kubernetes node arch (the kubernetes.io/arch label) → the seccomp architectures a
# process of that arch can use, as runc's and Docker's default profiles list them.
ARCHITECTURES: dict[str, list[str]] = {
    "amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}
DEFAULT_ARCH = "amd64"
BIG_ENDIAN = frozenset({"SCMP_ARCH_S390X", "SCMP_ARCH_S390"})  # the others listed are little


def profile(names: Iterable[str], default_action: str, arches: Iterable[str]) -> dict[str, Any]:
    """The profile: `default_action` for everything not observed, allow the rest."""
    groups: list[list[str]] = []
    for arch in sorted(set(arches)) or [DEFAULT_ARCH]:
        group = ARCHITECTURES.get(arch, ARCHITECTURES[DEFAULT_ARCH])
        if group not in groups:
            groups.append(group)
    scmp: list[str] = []
    for group in groups:
        scmp += [name for name in group if name not in scmp]
    observed = sorted(set(names))
    out: dict[str, Any] = {"defaultAction": default_action}
    if len({name in BIG_ENDIAN for name in scmp}) == 1:
        out["architectures"] = scmp
    else:
        out["archMap"] = [{"architecture": g[0], "subArchitectures": g[1:]} for g in groups]
    out["syscalls"] = [{"names": observed, "action": "SCMP_ACT_ALLOW"}] if observed else []
    return out


def profile_json(names: Iterable[str], default_action: str, arches: Iterable[str]) -> str:
    """The profile as the file a kubelet `localhost/` profile points to (stable text)."""
    return json.dumps(profile(names, default_action, arches), indent=2)


def profile_key(container: str) -> str:
    """The ConfigMap key (and node file suffix) of one container's profile.

    >>> profile_key("web")
    'web.json'
    """
    return f"{container}.json"


def profile_files(
    containers: Mapping[str, Iterable[str]], default_action: str, arches: Iterable[str]
) -> dict[str, str]:
    """One profile JSON per container name (syscall names allowed), by ConfigMap key;
    a container with no syscall yet gets none (an allow-nothing profile breaks a pod).
    Numbers libseccomp has no name for (`syscall_<n>`, a kernel newer than it) are left
    out: no runtime could load a profile naming them.

    >>> list(profile_files({"web": ["read", "syscall_999"], "idle": []}, "SCMP_ACT_ERRNO",
    ...                    ["amd64"]))
    ['web.json']
    """
    arches = list(arches)
    out = {}
    for name, names in sorted(containers.items()):
        known = [n for n in names if not n.startswith("syscall_")]
        if known:
            out[profile_key(name)] = profile_json(known, default_action, arches)
    return out
