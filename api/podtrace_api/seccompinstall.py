"""Seccomp profiles installed on the nodes: the contract between the operator, which
publishes them, and every node's agent, which writes them into the kubelet's seccomp
directory. Pure.

A ContainerTrace with `spec.seccompProfile.install: true` gets one ConfigMap in
podtrace's own namespace (`INSTALL_NAMESPACE`; tenants cannot write there), labelled
`INSTALL_LABEL`, whose keys are file names and whose values are the profiles. Each
agent watches those ConfigMaps, writes every key to `<seccomp dir>/podtrace/<key>`,
removes the files of ConfigMaps that are gone, and reports per trace the `digest` of
what it wrote; the operator compares that digest with its own to list the nodes that
have the current profiles.

The file name carries the trace's namespace, `<namespace>-<trace>-<container>.json`,
so a pod uses `localhostProfile: podtrace/<that>`. Dashes are what users expect but
are ambiguous (namespace `a-b`, trace `c` and namespace `a`, trace `b-c` meet), so the
operator hands each file name to one trace only: the first to claim it keeps it, and
the other is told the name is taken. Nothing a tenant writes decides a file name
beyond that.

    >>> file_name("shop", "rec", "web")
    'shop-rec-web.json'
    >>> localhost_profile("shop-rec-web.json")
    'podtrace/shop-rec-web.json'
    >>> len(file_name("n" * 63, "t" * 253, "c" * 63)) <= MAX_FILE_NAME
    True
    >>> digest({"a.json": "{}"}) == digest({"a.json": "{}"}) != digest({"a.json": "[]"})
    True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from .names import trim

INSTALL_NAMESPACE = "podtrace-system"  # the default; both sides take it from a flag
SUBDIR = "podtrace"  # under the kubelet's seccomp directory
INSTALL_LABEL = "podtrace.io/seccomp-install"
TRACE_ANNOTATION = "podtrace.io/trace"  # <namespace>/<name>
TRACE_UID_ANNOTATION = "podtrace.io/trace-uid"
DIGEST_ANNOTATION = "podtrace.io/digest"
# A ConfigMap key is at most 253 characters; a file name at most 255 bytes.
MAX_FILE_NAME = 253
DIGEST_CHARS = 16
# What an agent writes as a file: a name that cannot leave the directory (no slash, no
# leading dot) and the only names the operator makes.
FILE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.json$"
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
MAX_PROFILE_BYTES = 256 * 1024  # one profile: every syscall of every architecture fits


def file_name(namespace: str, trace: str, container: str) -> str:
    """The profile's file name under the podtrace subdirectory (hashed when too long)."""
    return trim(f"{namespace}-{trace}-{container}", MAX_FILE_NAME - len(".json")) + ".json"


def localhost_profile(name: str) -> str:
    """What a pod's `seccompProfile.localhostProfile` says to use the installed file."""
    return f"{SUBDIR}/{name}"


def config_map_name(namespace: str, trace: str) -> str:
    """The install ConfigMap of a trace (dots: namespaces have none, so it reads back).

    >>> config_map_name("shop", "rec")
    'seccomp.shop.rec'
    """
    return trim(f"seccomp.{namespace}.{trace}", 253)


def valid_file_name(name: str) -> bool:
    """Whether an agent may write `name` into the podtrace subdirectory.

    >>> [valid_file_name(n) for n in ("a-b.json", "../x.json", ".json", "a/b.json")]
    [True, False, False, False]
    """
    return len(name) <= MAX_FILE_NAME and _FILE_NAME.match(name) is not None


def digest(files: Mapping[str, str]) -> str:
    """What identifies one version of a trace's installed profiles, on both sides."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()[:DIGEST_CHARS]
