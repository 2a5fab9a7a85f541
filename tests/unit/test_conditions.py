from __future__ import annotations

from datetime import UTC, datetime, timedelta

from podtrace_api.conditions import get_condition, is_true, set_condition

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_transition_time_moves_only_with_the_status() -> None:
    conds = set_condition([], "Ready", True, "Tracing", "ok", T0, 1)
    conds = set_condition(conds, "Ready", True, "Tracing", "still ok", T1, 2)
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready.last_transition_time == T0
    assert ready.message == "still ok" and ready.observed_generation == 2
    conds = set_condition(conds, "Ready", False, "NoBackend", "bcc failed", T1)
    assert get_condition(conds, "Ready").last_transition_time == T1
    assert not is_true(conds, "Ready")


def test_other_conditions_are_kept_and_sorted() -> None:
    conds = set_condition([], "Valid", True, "Accepted", "", T0)
    conds = set_condition(conds, "Applied", "Unknown", "Waiting", "", T0)
    assert [c.type for c in conds] == ["Applied", "Valid"]
    assert is_true(conds, "Valid") and not is_true(conds, "Missing")
