"""The Security Profiles Operator's `SeccompProfile` objects for a trace's profiles. Pure.

Where SPO's CRD (`seccompprofiles.security-profiles-operator.x-k8s.io`) is installed,
each profile of the ConfigMap `<trace>-seccomp` is also written as a SeccompProfile
whose `spec` is that profile's JSON as it stands: SPO's spec has the OCI profile's
`defaultAction`, `architectures` and `syscalls[{names, action}]` (plus fields of its
own we leave unset: `baseProfileName`, `state`, listener settings), and no `archMap`.
A profile that needs `archMap` (nodes of both byte orders) has no SPO form and is not
written as one.

The CRD says where objects live: SPO v0.9 and later make it cluster-scoped (named
`<namespace>.<trace>.<container>`, no ownerReference: a cluster-scoped object cannot
be owned by a namespaced one, so the operator deletes it with the trace); a
namespaced CRD (older SPO) gets `<trace>.<container>` in the trace's namespace, owned
by the trace. Dots separate the parts because namespace and container names have
none (DNS labels) while trace names may: the parts read back unambiguously, so two
tenants' names can never meet (`a-b`/`c` and `a`/`b-c` would, with dashes).

    >>> object_name("shop", "rec", "web", namespaced=False)
    'shop.rec.web'
    >>> len(object_name("shop", "r" * 300, "web", namespaced=False))
    253
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podtrace_api.names import trim

GROUP = "security-profiles-operator.x-k8s.io"
PLURAL = "seccompprofiles"
CRD_NAME = f"{PLURAL}.{GROUP}"
VERSION = "v1"  # SPO v1.0 and later; older releases' v1beta1 is not written

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
TRACE = "podtrace.io/trace"
TRACE_NAMESPACE = "podtrace.io/trace-namespace"
CONTAINER = "podtrace.io/container"

NAME_MAX = 253  # a DNS subdomain (object names)
LABEL_MAX = 63  # a label value


@dataclass(frozen=True)
class SpoApi:
    """Where SeccompProfiles are served, as the installed CRD says."""

    namespaced: bool
    version: str = VERSION

    def path(self, namespace: str = "", name: str = "") -> str:
        """REST path of the collection (or one object) in `namespace` when namespaced.

        >>> SpoApi(namespaced=False).path("shop", "a.b")
        '/apis/security-profiles-operator.x-k8s.io/v1/seccompprofiles/a.b'
        """
        base = f"/apis/{GROUP}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{PLURAL}"
        return f"{base}/{name}" if name else base


def api_of(crd: Mapping[str, Any]) -> SpoApi | None:
    """The SpoApi of SPO's CRD object, or None when it serves no version we write.

    >>> api_of({"spec": {"scope": "Cluster", "versions": [{"name": "v1", "served": True}]}})
    SpoApi(namespaced=False, version='v1')
    """
    spec = crd.get("spec") or {}
    served = {v.get("name") for v in spec.get("versions") or [] if v.get("served")}
    if VERSION not in served:
        return None
    return SpoApi(namespaced=spec.get("scope") == "Namespaced")


def object_name(namespace: str, trace: str, container: str, *, namespaced: bool) -> str:
    """The SeccompProfile's name for one container's profile (see the module docstring)."""
    parts = [trace, container] if namespaced else [namespace, trace, container]
    return trim(".".join(parts), NAME_MAX)


def labels(namespace: str, trace: str, container: str,
           managed_by: Mapping[str, str]) -> dict[str, str]:  # fmt: skip
    """What finds (and cleans up) a trace's SeccompProfiles."""
    return {**managed_by, TRACE: trim(trace, LABEL_MAX), TRACE_NAMESPACE: namespace,
            CONTAINER: container}  # fmt: skip


def container_of(key: str) -> str:
    """The container name of a ConfigMap key.

    >>> container_of("web.json")
    'web'
    """
    return key.removesuffix(".json")


def seccomp_profiles(
    api: SpoApi,
    files: Mapping[str, str],
    *,
    namespace: str,
    trace: str,
    trace_uid: str,
    owner_api_version: str,
    managed_by: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One SeccompProfile per ConfigMap key, its spec the profile JSON itself; profiles
    with an `archMap` (no SPO form) are left out."""
    out = []
    for key, text in sorted(files.items()):
        spec = json.loads(text)
        if "archMap" in spec:
            continue
        container = container_of(key)
        meta: dict[str, Any] = {
            "name": object_name(namespace, trace, container, namespaced=api.namespaced),
            "labels": labels(namespace, trace, container, managed_by),
        }
        if api.namespaced:
            meta["namespace"] = namespace
            meta["ownerReferences"] = [{"apiVersion": owner_api_version,
                                        "kind": "ContainerTrace", "name": trace,
                                        "uid": trace_uid}]  # fmt: skip
        out.append({"apiVersion": f"{GROUP}/{api.version}", "kind": "SeccompProfile",
                    "metadata": meta, "spec": spec})  # fmt: skip
    return out


def orphans(
    existing: Iterable[Mapping[str, Any]], traces: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(namespace, name) of the listed SeccompProfiles whose trace is not among `traces`
    ((namespace, name) of the traces that still build a profile). The namespace is ""
    for cluster-scoped objects.

    >>> orphans([{"metadata": {"name": "a.t.c", "labels": {TRACE: "t",
    ...           TRACE_NAMESPACE: "a"}}}], [("b", "t")])
    [('', 'a.t.c')]
    """
    keep = {(ns, trim(name, LABEL_MAX)) for ns, name in traces}
    out = []
    for obj in existing:
        meta = obj.get("metadata") or {}
        lab = meta.get("labels") or {}
        if (lab.get(TRACE_NAMESPACE), lab.get(TRACE)) not in keep:
            out.append((meta.get("namespace") or "", meta["name"]))
    return sorted(out)
