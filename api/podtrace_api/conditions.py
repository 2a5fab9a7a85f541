"""Standard conditions: set one without disturbing the others, and keep its
lastTransitionTime when its status did not change (as metav1 conditions are
meant to be kept, so `kubectl wait` and dashboards see real transitions only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .base import Condition, ConditionStatus


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | str | bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """`conditions` with `type_` set; sorted by type for a stable status.

    A bool status is True/False. lastTransitionTime only moves when the status does.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    status = ConditionStatus(status)
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_]
    return sorted([*others, updated], key=lambda c: c.type)


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, if set."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether condition `type_` is set and True."""
    found = get_condition(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE
