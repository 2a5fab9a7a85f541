"""Seccomp profiles installed on the nodes: the contract between the operator, which
publishes them, and every node's agent, which writes them into the kubelet's seccomp
directory. Pure.

A ContainerTrace with `spec.seccompProfile.install: true` gets one ConfigMap in
podtrace's own namespace (`INSTALL_NAMESPACE`; tenants cannot write there), labelled
`INSTALL_LABEL`, whose keys are file names and whose values are the profiles. Each
agent watches those ConfigMaps, writes every key to
`<seccomp dir>/podtrace/<trace's namespace>/<key>`, removes the files of ConfigMaps
that are gone, and reports per trace the `digest` of what it wrote; the operator
compares that digest with its own to list the nodes that have the current profiles.

A pod uses `localhostProfile: podtrace/<namespace>/<trace>-<container>.json`. The
namespace is a directory of its own, not a prefix joined with a dash: with dashes two
tenants' names can meet (namespace `a-b`, trace `c` and namespace `a`, trace `b-c` both
make `a-b-c-web.json`), and whichever recorded first would decide what the other's pods
run under. Within one namespace `<trace>-<container>` can still meet (trace `a-b`,
container `c` and trace `a`, container `b-c`): the operator hands each path to the first
trace of that namespace that claims it.

    >>> file_name("rec", "web")
    'rec-web.json'
    >>> localhost_profile("shop", "rec-web.json")
    'podtrace/shop/rec-web.json'
    >>> len(file_name("t" * 253, "c" * 63)) <= MAX_FILE_NAME
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
# leading dot) and the only names the operator makes; in a directory named after the
# trace's namespace (a DNS label).
FILE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.json$"
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_FILE_NAME = re.compile(FILE_NAME_PATTERN)
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
MAX_PROFILE_BYTES = 256 * 1024  # one profile: every syscall of every architecture fits


def file_name(trace: str, container: str) -> str:
    """The profile's file name in its namespace's directory (hashed when too long)."""
    return trim(f"{trace}-{container}", MAX_FILE_NAME - len(".json")) + ".json"


def localhost_profile(namespace: str, name: str) -> str:
    """What a pod's `seccompProfile.localhostProfile` says to use the installed file."""
    return f"{SUBDIR}/{namespace}/{name}"


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


def valid_namespace(name: str) -> bool:
    """Whether `name` can be a namespace directory.

    >>> [valid_namespace(n) for n in ("shop", "..", "a/b", "")]
    [True, False, False, False]
    """
    return _NAMESPACE.match(name) is not None


def digest(files: Mapping[str, str]) -> str:
    """What identifies one version of a trace's installed profiles, on both sides."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()[:DIGEST_CHARS]
