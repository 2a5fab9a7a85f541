"""The operator's pure helpers around the writer: merge patches, the Lease
rule, Event naming, series and occurrence keys, and the runtime's memory as watch
events arrive (no apiserver: only what the handlers do before any write)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podtrace_operator.events import (
    OCCURRENCE,
    EventSpec,
    EventType,
    ObjectRef,
    event_name,
    new_event,
    next_count,
    occurrence,
    raised_by,
    series_patch,
)
from podtrace_operator.leadership import LeaseTimes, claim, holder_record
from podtrace_operator.merge_patch import apply_patch, replace_patch
from podtrace_operator.runtime import Runtime, Settings, revision

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

JSON = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=3),
    max_leaves=10,
)  # fmt: skip


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(st.dictionaries(st.text(max_size=2), JSON, max_size=4),
       st.dictionaries(st.text(max_size=2), JSON, max_size=4))  # fmt: skip
def test_replace_patch_turns_old_into_new(old: dict, new: dict) -> None:
    old, new = without_nulls(old), without_nulls(new)
    assert apply_patch(old, replace_patch(old, new)) == new


def held(holder: str, transitions: int = 2, duration: int = 15) -> dict[str, Any]:
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration,
        "acquireTime": "2026-01-01T11:00:00.000000Z",
        "renewTime": "2026-01-01T11:59:58.000000Z",
        "leaseTransitions": transitions,
    }


def test_a_lease_is_taken_only_once_its_holder_record_aged_past_its_duration() -> None:
    def take(spec: dict[str, Any], me: str, aged: float) -> dict[str, Any] | None:
        return claim(spec, me, unchanged_for=aged, default_duration=15, wall_now=NOW)

    assert take(held("a"), "b", 14.9) is None
    assert take(held("a"), "b", 15.0) is None  # not past it yet
    assert take(held("a", duration=30), "b", 20) is None  # the holder's duration counts
    taken = take(held("a"), "b", 15.1)
    assert taken == {"holderIdentity": "b", "leaseDurationSeconds": 15,
                     "acquireTime": "2026-01-01T12:00:00.000000Z",
                     "renewTime": "2026-01-01T12:00:00.000000Z", "leaseTransitions": 3}  # fmt: skip
    renewed = take(held("a"), "a", 0)  # the holder renews at any age, keeps its acquireTime
    assert renewed is not None
    assert (renewed["acquireTime"], renewed["leaseTransitions"]) == (
        "2026-01-01T11:00:00.000000Z", 2)
    assert renewed["renewTime"] == "2026-01-01T12:00:00.000000Z"
    released = {"leaseDurationSeconds": 1, "leaseTransitions": 2}  # clean shutdown
    after_release = take(released, "b", 0)
    assert after_release is not None and after_release["leaseTransitions"] == 3
    fresh = take({}, "b", 0)
    assert fresh is not None and fresh["leaseTransitions"] == 0


def test_any_change_of_the_holder_record_restarts_the_wait() -> None:
    assert holder_record(held("a")) != holder_record({**held("a"), "renewTime": "later"})
    assert holder_record(held("a")) != holder_record(held("b"))
    assert holder_record(held("a")) == holder_record({**held("a"), "acquireTime": "other"})


def test_lease_times_leave_room_for_a_write_in_flight() -> None:
    LeaseTimes().check()
    for bad in (LeaseTimes(15, 15, 2), LeaseTimes(15, 10, 10), LeaseTimes(5, 10, 2)):
        with pytest.raises(ValueError, match="retry < renew deadline < duration"):
            bad.check()


def test_events_are_named_per_object_and_content_and_fold_into_series() -> None:
    ref = ObjectRef("podtrace.io/v1alpha1", "TracingPolicy", "shells", "uid-1")
    warn = EventSpec(EventType.WARNING, "Invalid", "spec.rules[0]: bad")
    other = EventSpec(EventType.WARNING, "Invalid", "spec.rules[1]: bad")
    assert event_name(ref, warn) == event_name(ref, warn) != event_name(ref, other)
    assert event_name(ref, warn).startswith("shells.")
    body = new_event(ref, warn, NOW, "ns/pod/1", "k1")
    assert body["metadata"]["namespace"] == "default"  # cluster-scoped: Events in default
    assert body["regarding"] == {"apiVersion": "podtrace.io/v1alpha1", "kind": "TracingPolicy",
                                 "name": "shells", "uid": "uid-1"}  # fmt: skip
    assert body["eventTime"] == "2026-01-01T12:00:00.000000Z" and body["type"] == "Warning"
    assert body["metadata"]["annotations"] == {OCCURRENCE: "k1"}


def test_an_event_knows_the_transition_that_raised_it_and_its_series_count() -> None:
    ref = ObjectRef("podtrace.io/v1alpha1", "TracingPolicy", "shells", "uid-1")
    body = new_event(ref, EventSpec(EventType.NORMAL, "Accepted", "ok"), NOW, "i", "k1")
    assert raised_by(body) == "k1" and next_count(body) == 2
    patch = series_patch(next_count(body), NOW, "k2")
    assert patch == {
        "metadata": {"annotations": {OCCURRENCE: "k2"}},
        "series": {"count": 2, "lastObservedTime": "2026-01-01T12:00:00.000000Z"},
    }
    repeated = apply_patch(body, patch)
    assert raised_by(repeated) == "k2" and next_count(repeated) == 3
    assert raised_by({"metadata": {}}) is None


@given(JSON, JSON)
def test_occurrence_keys_are_equal_exactly_for_equal_statuses(a: Any, b: Any) -> None:
    a, b = {"s": a}, {"s": b}
    assert (occurrence(a) == occurrence(b)) == (a == b)
    assert occurrence(a) == occurrence(dict(reversed(list(a.items()))))


def pod(uid: str, node: str = "n1", labels: dict | None = None) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": f"p-{uid}", "namespace": "shop",
                         "labels": labels or {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "app"}]},
            "status": {"phase": "Running"}}  # fmt: skip


def policy(generation: int = 1, status: dict | None = None) -> dict[str, Any]:
    body = {"metadata": {"name": "web", "uid": "tp-1", "generation": generation},
            "spec": {"selector": {"podSelector": {"matchLabels": {"app": "web"}}}}}  # fmt: skip
    if status is not None:
        body["status"] = status
    return body


def test_runtime_memory_follows_watch_events() -> None:
    rt = Runtime(Settings(), kube=None)
    rt.node_seen({"metadata": {"name": "n1", "uid": "node-1", "labels": {}}})
    rt.namespace_seen({"metadata": {"name": "shop", "labels": {}}})
    rt.pod_seen(pod("u1"))
    rt.policy_seen(policy())
    assert not rt.synced and "TracingPolicy/web" in rt.dirty.sources
    rt.mark_synced()
    assert rt.dirty.nodes == {"n1"}
    changed = rt.index.flush()
    assert [t["podUid"] for t in changed["n1"]["targets"]] == ["u1"]
    rt.pod_gone(pod("u1"))
    assert rt.index.flush()["n1"]["targets"] == []
    rt.policy_gone(policy())
    assert "TracingPolicy/web" not in rt.index.sources


def test_a_watch_event_older_than_our_status_write_is_ignored() -> None:
    rt = Runtime(Settings(), kube=None)
    before = {"observedGeneration": 1, "conditions": []}
    rt.policy_seen(policy(status=before))
    state = rt.policies["TracingPolicy/web"]
    state.replaced = before  # what a status write replaced
    state.status = None
    rt.policy_seen(policy(status=before))  # in flight from before the write
    assert rt.policies["TracingPolicy/web"] is state
    rt.policy_seen(policy(generation=2, status=before))  # a user's edit is never ignored
    assert rt.policies["TracingPolicy/web"].generation == 2


def test_a_watch_event_not_newer_than_the_last_relist_is_ignored() -> None:
    rt = Runtime(Settings(), kube=None)
    rt.node_seen({"metadata": {"name": "n1", "uid": "n-1", "labels": {}, "resourceVersion": "5"}})
    rt.namespace_seen({"metadata": {"name": "shop", "labels": {}}})
    rt.listed_at = {"pod": 100, "policy": 100}  # as a re-list at revision 100 leaves it
    lagging = {**pod("u1"), "metadata": {**pod("u1")["metadata"], "resourceVersion": "99"}}
    rt.pod_seen(lagging)  # deleted before the list was taken: must not come back
    assert "u1" not in rt.index.pods
    rt.pod_seen({**lagging, "metadata": {**lagging["metadata"], "resourceVersion": "101"}})
    assert "u1" in rt.index.pods
    rt.pod_seen({**pod("u2"), "metadata": {**pod("u2")["metadata"], "resourceVersion": "x"}})
    assert "u2" in rt.index.pods  # not a number: nothing to compare, taken in
    rt.node_seen({"metadata": {"name": "n2", "labels": {}, "resourceVersion": "3"}})
    assert "n2" in rt.index.nodes  # nodes were not re-listed: no floor for them
    assert (revision({"metadata": {"resourceVersion": "7"}}), revision({})) == (7, None)


def test_cli_defaults_and_kopf_settings_keep_bookkeeping_off_user_objects() -> None:
    import kopf

    from podtrace_operator.main import lease_times, main, operator_settings, parse_args

    args = parse_args(["--kubeconfig", "/tmp/k", "--pending-timeout", "90s"])
    assert (args.lease, args.standalone) == ("podtrace-operator", False)
    assert lease_times(args) == LeaseTimes(duration=15, renew_deadline=10, retry=2)
    assert args.pending_timeout == timedelta(seconds=90)
    assert parse_args(["--standalone"]).standalone
    assert main(["--lease-duration=5s", "--renew-deadline=10s"]) == 2  # refused before start
    settings = operator_settings(args)
    assert isinstance(settings.persistence.progress_storage, kopf.StatusProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.StatusDiffBaseStorage)
    assert settings.posting.enabled is False
