"""Shared building blocks of the podtrace CRD models.

Every model serialises with camelCase names (Kubernetes convention) while the
Python attributes stay snake_case. `Field(description=…, max_length=…)` on each
field is what becomes the CRD's description and bounds; CEL rules for
cross-field checks are attached with `cel(...)` in `json_schema_extra`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .budget import PLAIN_TEXT_PATTERN, plain_clipped

# Bounds shared by several kinds. Results are bounded in status too: an
# unbounded list in status is an etcd object that grows until writes fail.
MAX_NAME = 253
MAX_LABEL_KEY = 317  # prefix (253) + "/" + name (63)
MAX_LABEL_VALUE = 63
MAX_MESSAGE = 1024
MAX_CONDITIONS = 16

# Kubernetes-style durations as Go's time.ParseDuration accepts them: "90s", "10m", "1h30m".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SYSCALL_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
ABS_PATH_PATTERN = r"^/[^\x00]*$"
REASON_PATTERN = r"^[A-Z][A-Za-z0-9]*$"


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the apiserver stores it: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """`x-kubernetes-validations` for a model: (rule, message[, fieldPath]) tuples."""
    out = []
    for rule in rules:
        entry = {"rule": rule[0], "message": rule[1]}
        if len(rule) == 3:
            entry["fieldPath"] = rule[2]
        out.append(entry)
    return {"x-kubernetes-validations": out}


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extra for a list keyed like a map (keys unique, server-side-apply merges)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


SET = {"x-kubernetes-list-type": "set"}
# A list written whole by its one writer (the agent's status, the operator's NodeTracer
# spec and ContainerTrace targets): the apiserver tracks it as one field. A list-map or
# set costs a managedFields entry per item, which for a NodeTracer's thousand targets is
# about as many bytes as the list itself (and with them the object would pass etcd's
# limit).
ATOMIC = {"x-kubernetes-list-type": "atomic"}

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN_PATTERN)]
DNSLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
SyscallName = Annotated[str, Field(min_length=1, max_length=64, pattern=SYSCALL_NAME_PATTERN)]
AbsPath = Annotated[str, Field(min_length=1, max_length=256, pattern=ABS_PATH_PATTERN)]
Message = Annotated[str, Field(max_length=MAX_MESSAGE)]


def plain_text(max_length: int) -> Any:
    """A status string written by podtrace itself (a message, a path, a filename):
    made plain and clipped on the way in (`budget.plain_clipped`), so it is never
    more bytes than characters and the CRD's bound is its size in etcd."""

    def fit(value: Any) -> Any:
        return plain_clipped(value, max_length) if isinstance(value, str) else value

    return Annotated[
        str,
        Field(max_length=max_length, pattern=PLAIN_TEXT_PATTERN),
        BeforeValidator(fit),  # after Field: pydantic drops the pattern otherwise
    ]


ShortText = plain_text(256)
Counter = Annotated[int, Field(ge=0, json_schema_extra={"format": "int64"})]


class LabelSelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Model):
    """A label selector requirement: a key, an operator and (for In/NotIn) values."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)",
                "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
                ".values",
            )
        )
    )

    key: str = Field(
        min_length=1,
        max_length=MAX_LABEL_KEY,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="The label key the selector applies to.",
    )
    operator: LabelSelectorOperator = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=list,
        max_length=64,
        description="Label values; non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )


class LabelSelector(Model):
    """A Kubernetes label selector. All requirements are ANDed; an empty selector
    matches everything."""

    match_labels: dict[str, Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels that must all be present with exactly these values.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=32,
        description="Requirements that must all hold.",
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of condition in CamelCase, e.g. Valid or Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A CamelCase machine-readable reason for the last transition.",
    )
    message: Message = Field(default="", description="A human-readable explanation.")
    last_transition_time: datetime = Field(
        description="When the condition last changed status."
    )
    observed_generation: Counter | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Standard conditions describing the object's state.",
        json_schema_extra=list_map("type"),
    ),
]


_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Parse a Kubernetes/Go-style duration.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    """
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 10m or 1h30m")
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)
