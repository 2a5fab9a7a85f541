"""Every status stays within the byte budget at the worst case its CRD allows
(computed from the generated CRDs, not from the models' hopes), and the pieces
that computation rests on: plain text, plain patterns, the syscall set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from podtrace_api import budget, crdgen, syscallset
from podtrace_api.budget import (
    ETCD_OBJECT_LIMIT_BYTES,
    PLAIN_CHARS,
    PLAIN_TEXT_PATTERN,
    STATUS_BUDGET_BYTES,
    is_plain_pattern,
    plain,
    plain_clipped,
    worst_case_bytes,
)
from podtrace_api.nodetracer import NodeTargetStatus

CRDS = Path(__file__).resolve().parents[2] / "crds"


def _committed(kind: type) -> dict:
    return yaml.safe_load((CRDS / f"podtrace.io_{kind.PLURAL}.yaml").read_text())


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.KIND)
def test_the_worst_status_the_crd_admits_is_within_the_budget(kind: type) -> None:
    worst = worst_case_bytes(budget.status_schema(_committed(kind)))
    assert worst <= STATUS_BUDGET_BYTES, f"{kind.KIND} status: {worst} bytes at worst"


def test_the_budget_leaves_room_in_etcd_s_limit() -> None:
    assert STATUS_BUDGET_BYTES <= ETCD_OBJECT_LIMIT_BYTES * 2 // 3


def test_the_worst_case_of_small_schemas_is_their_json() -> None:
    label = {"type": "string", "maxLength": 3, "pattern": "^[a-z]*$"}
    assert worst_case_bytes(label) == len(json.dumps("abc"))
    free = {"type": "string", "maxLength": 2}
    assert worst_case_bytes(free) == len(json.dumps("\x01\x02"))  # "\u0001\u0002"
    obj = {"type": "object", "properties": {"a": label, "n": {"type": "integer", "minimum": 0,
                                                              "format": "int64"}}}
    widest = {"a": "abc", "n": 2**63 - 1}
    assert worst_case_bytes(obj) == len(json.dumps(widest, separators=(",", ":")))
    listed = {"type": "array", "maxItems": 3, "items": obj}
    assert worst_case_bytes(listed) == len(json.dumps([widest] * 3, separators=(",", ":")))
    with pytest.raises(ValueError, match="map"):
        worst_case_bytes({"type": "object", "additionalProperties": {"type": "integer"}})
    with pytest.raises(ValueError, match="unbounded"):
        worst_case_bytes({"type": "array", "items": label})


def test_plain_patterns() -> None:
    assert is_plain_pattern(PLAIN_TEXT_PATTERN)
    assert is_plain_pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    assert is_plain_pattern(syscallset.PATTERN)
    assert not is_plain_pattern(r"^/[^\x00]*$")  # a negated class admits anything else
    assert not is_plain_pattern(r"^.*$")
    assert not is_plain_pattern(r"^[a-z<]*$")  # Go escapes <
    assert not is_plain_pattern(r"[a-z]*")  # not anchored


@given(st.text())
def test_plain_text_is_one_byte_a_character_and_stable(text: str) -> None:
    out = plain(text)
    assert set(out) <= PLAIN_CHARS and re.fullmatch(PLAIN_TEXT_PATTERN, out)
    assert len(json.dumps(out)) == len(out) + 2
    assert plain(out) == out
    clipped = plain_clipped(text, 20)
    assert len(clipped) <= 20 and plain(clipped) == clipped


def test_status_text_is_made_plain_on_the_way_in() -> None:
    target = NodeTargetStatus(pod_uid="u1", container="app", container_id="x\u00e9" * 50)
    assert target.container_id.isascii() and len(target.container_id) <= 64
    again = NodeTargetStatus.model_validate(target.to_wire())
    assert again == target  # reading a stored status does not change it


@given(st.sets(st.integers(0, syscallset.SYSCALL_NUMBERS - 1)))
def test_syscall_sets_round_trip(numbers: set[int]) -> None:
    text = syscallset.encode(numbers)
    assert syscallset.decode(text) == numbers
    assert len(text) <= syscallset.MAX_CHARS and re.fullmatch(syscallset.PATTERN, text)


def test_an_unreadable_syscall_set_is_empty() -> None:
    assert syscallset.decode("not base64!") == set()
