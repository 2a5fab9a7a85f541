"""Seccomp profiles (the OCI / Kubernetes `localhost` JSON format) that allow
exactly the syscalls a ContainerTrace observed. Pure.

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
from collections.abc import Iterable
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


def profile(names: Iterable[str], default_action: str, arches: Iterable[str]) -> dict[str, Any]:
    """The profile: `default_action` for everything not observed, allow the rest."""
    scmp: list[str] = []
    for arch in sorted(set(arches)) or [DEFAULT_ARCH]:
        for name in ARCHITECTURES.get(arch, ARCHITECTURES[DEFAULT_ARCH]):
            if name not in scmp:
                scmp.append(name)
    observed = sorted(set(names))
    out: dict[str, Any] = {"defaultAction": default_action, "architectures": scmp}
    out["syscalls"] = [{"names": observed, "action": "SCMP_ACT_ALLOW"}] if observed else []
    return out


def profile_json(names: Iterable[str], default_action: str, arches: Iterable[str]) -> str:
    """The profile as the file a kubelet `localhost/` profile points to (stable text)."""
    return json.dumps(profile(names, default_action, arches), indent=2)
