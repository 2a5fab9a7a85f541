"""How many bytes a podtrace status may take, and the worst case its CRD allows.

etcd refuses an object over 1.5 MiB, and once a NodeTracer's status passes that
every status write of its agent fails, forever. So every status is bounded by
its CRD (maxItems, maxLength, enums), and the bounds are chosen so that the
largest status admission can accept stays within `STATUS_BUDGET_BYTES`, which
leaves the rest of etcd's limit to spec, metadata and managedFields.
`worst_case_bytes` computes that largest status from a CRD schema;
tests/unit/test_budget.py checks each kind against the budget.

What a status cannot hold in full (a node with more distinct syscalls or
programs than a list shows) is cut with a count of what was left out, never
silently: see the `*Omitted` fields of the status models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# etcd's default request limit (--max-request-bytes), the largest object it stores.
ETCD_OBJECT_LIMIT_BYTES = 1_572_864
# What the status of any one podtrace object may take as the apiserver stores it (JSON).
STATUS_BUDGET_BYTES = 1 << 20

# The scale one node's NodeTracer is sized for: 250 pods of 4 containers fit.
MAX_NODE_TARGETS = 1024
# Policies and traces with a target on one node.
MAX_NODE_SOURCES = 32
# Per source and node: the most frequent syscalls and programs listed by name.
TOP_SYSCALLS = 32
TOP_EXECS = 12
# Targets of a node listed with the sources not applied to them (the rest counted).
MAX_NOT_APPLIED_ROWS = 64
# Targets of a node whose workload syscalls are listed for seccomp profiles (the rest
# counted): about 230 bytes each.
MAX_NODE_PROFILES = 128
# Traces whose profiles are installed on every node (ContainerTrace install: true), as
# one node reports them; the operator installs no more than this many.
MAX_INSTALLED_TRACES = 96

# What a NodeTracer's spec may take as JSON: with the status budget and 128 KiB for
# metadata and managedFields, the object stays within etcd's limit. The operator leaves
# the largest sources out of a node's spec rather than write one etcd refuses (and says
# so in their status).
SPEC_BUDGET_BYTES = 384 * 1024

# RFC 3339 with nanoseconds and an offset: 2006-01-02T15:04:05.999999999-07:00.
DATE_TIME_CHARS = 35
# A character of free text as JSON stores it at worst: a control character, or
# <, > and & (Go's encoder, which the apiserver uses, escapes them) as \u00XX.
JSON_CHAR_BYTES = 6
# Characters JSON writes as themselves, one byte each: printable ASCII but for
# the quote, the backslash and Go's HTML escapes.
PLAIN_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - set('"\\<>&')
# A pattern for machine-written text made of PLAIN_CHARS only.
PLAIN_TEXT_PATTERN = r"^[ !#-%'-;=?-\[\]-~]*$"


_ESCAPED = re.compile(r"%[0-9A-F]{2}")
_PARTIAL_ESCAPE = re.compile(r"%[0-9A-F]?$")


def plain(text: str) -> str:
    """`text` with every character JSON would not store as one byte replaced by a
    percent escape of its UTF-8 bytes, so it matches PLAIN_TEXT_PATTERN and its
    length in bytes is its length in characters. A % that already starts an
    escape is kept, so plain(plain(t)) == plain(t).

    >>> plain('caf\\u00e9 "x" 100%')
    'caf%C3%A9 %22x%22 100%25'
    """
    out = []
    for i, c in enumerate(text):
        if c in PLAIN_CHARS and (c != "%" or _ESCAPED.match(text, i)):
            out.append(c)
        else:
            out.append("".join(f"%{b:02X}" for b in c.encode()))
    return "".join(out)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut (never
    inside a percent escape).

    >>> clip("abcdef", 5), clip("abc", 5), clip("ab%C3%A9cd", 7)
    ('ab...', 'abc', 'ab...')
    """
    if len(text) <= limit:
        return text
    return _PARTIAL_ESCAPE.sub("", text[: max(0, limit - 3)]) + "..."


def plain_clipped(text: str, limit: int) -> str:
    """What a status text field stores of `text`: plain, then clipped.

    >>> plain_clipped("/usr/bin/caf\\u00e9", 12)
    '/usr/bin/...'
    """
    return clip(plain(text), limit)


def _plain_node(op: Any, arg: Any) -> bool:
    from re import _constants as c  # type: ignore[attr-defined]

    if op == c.LITERAL:
        return chr(arg) in PLAIN_CHARS
    if op == c.RANGE:
        return all(chr(x) in PLAIN_CHARS for x in range(arg[0], arg[1] + 1))
    if op == c.IN:
        return all(_plain_node(o, a) for o, a in arg)
    if op == c.AT:
        return True
    if op in (c.MAX_REPEAT, c.MIN_REPEAT):
        return _plain_seq(arg[2])
    if op == c.SUBPATTERN:
        return _plain_seq(arg[3])
    if op == c.BRANCH:
        return all(_plain_seq(seq) for seq in arg[1])
    return False  # ANY, NEGATE, NOT_LITERAL, CATEGORY (Unicode classes), ...


def _plain_seq(seq: Any) -> bool:
    return all(_plain_node(op, arg) for op, arg in seq)


def is_plain_pattern(pattern: str) -> bool:
    """Whether every string a pattern matches is made of PLAIN_CHARS: the pattern
    is anchored at both ends and every character it can match is plain.

    >>> is_plain_pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), is_plain_pattern("^/[^\\\\x00]*$")
    (True, False)
    >>> is_plain_pattern("[a-z]+")  # unanchored: constrains only a substring
    False
    """
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    parsed = list(_parser.parse(pattern))
    anchored = (
        len(parsed) >= 2
        and parsed[0] == (c.AT, c.AT_BEGINNING)
        and parsed[-1] == (c.AT, c.AT_END)
    )
    return anchored and _plain_seq(parsed)


def _integer_digits(schema: Mapping[str, Any]) -> int:
    low = schema.get("minimum", -(2**63) if schema.get("format") != "int32" else -(2**31))
    high = schema.get("maximum", 2**63 - 1 if schema.get("format") != "int32" else 2**31 - 1)
    return max(len(str(int(low))), len(str(int(high))))


def _string_bytes(schema: Mapping[str, Any]) -> int:
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    if schema.get("format") == "date-time":
        return DATE_TIME_CHARS + 2
    if "maxLength" not in schema:
        raise ValueError(f"unbounded string: {schema}")
    pattern = schema.get("pattern")
    per_char = 1 if pattern and is_plain_pattern(pattern) else JSON_CHAR_BYTES
    return int(schema["maxLength"]) * per_char + 2


def worst_case_bytes(schema: Mapping[str, Any]) -> int:
    """The most bytes a JSON value admitted by a structural OpenAPI schema can take:
    every optional field present, every list at maxItems, every string at
    maxLength (one byte a character where its pattern allows only PLAIN_CHARS,
    JSON_CHAR_BYTES otherwise), every number at its widest.

    >>> worst_case_bytes({"type": "array", "maxItems": 2,
    ...                   "items": {"type": "string", "maxLength": 3, "pattern": "^[a-z]*$"}})
    13
    """
    kind = schema.get("type")
    if kind == "object":
        if "additionalProperties" in schema:
            raise ValueError("a map's keys are unbounded in a CRD schema: use a list")
        props: Mapping[str, Any] = schema.get("properties", {})
        inner = sum(len(json.dumps(k)) + 1 + worst_case_bytes(v) for k, v in props.items())
        return 2 + inner + max(0, len(props) - 1)
    if kind == "array":
        n = int(schema["maxItems"]) if "maxItems" in schema else None
        if n is None:
            raise ValueError(f"unbounded list: {schema}")
        return 2 + n * worst_case_bytes(schema["items"]) + max(0, n - 1)
    if kind == "string":
        return _string_bytes(schema)
    if kind == "integer":
        return _integer_digits(schema)
    if kind == "number":
        return 25
    if kind == "boolean":
        return 5
    raise ValueError(f"no bound for schema type {kind!r}")


def status_schema(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    """The status part of a CRD's (first version's) schema."""
    top = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return top["properties"]["status"]

