"""The operator's pure helpers around the writer: merge patches, the peering
rule, Event naming and series, and the runtime's memory as watch events arrive
(no apiserver: only what the handlers do before any write)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from podtrace_operator.events import (
    EventSpec,
    EventType,
    ObjectRef,
    SeriesBook,
    event_name,
    new_event,
    series_patch,
)
from podtrace_operator.leadership import may_write
from podtrace_operator.merge_patch import apply_patch, replace_patch
from podtrace_operator.runtime import Runtime, Settings

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


def peer(priority: int, seen: datetime = NOW, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_only_the_highest_live_peer_may_write() -> None:
    assert may_write({"a": peer(10), "b": peer(5)}, "a", 10, NOW)
    assert not may_write({"a": peer(10), "b": peer(5)}, "b", 5, NOW)
    assert not may_write({"a": peer(10), "b": peer(10)}, "a", 10, NOW)  # kopf pauses both
    dead = peer(99, seen=NOW - timedelta(minutes=5))
    assert may_write({"a": peer(10), "b": dead}, "a", 10, NOW)
    assert not may_write({}, "a", 10, NOW)  # not announced yet: kopf has not started either


def test_events_are_named_per_object_and_content_and_fold_into_series() -> None:
    ref = ObjectRef("podtrace.io/v1alpha1", "TracingPolicy", "shells", "uid-1")
    warn = EventSpec(EventType.WARNING, "Invalid", "spec.rules[0]: bad")
    other = EventSpec(EventType.WARNING, "Invalid", "spec.rules[1]: bad")
    assert event_name(ref, warn) == event_name(ref, warn) != event_name(ref, other)
    assert event_name(ref, warn).startswith("shells.")
    body = new_event(ref, warn, NOW, "ns/pod/1")
    assert body["metadata"]["namespace"] == "default"  # cluster-scoped: Events in default
    assert body["regarding"] == {"apiVersion": "podtrace.io/v1alpha1", "kind": "TracingPolicy",
                                 "name": "shells", "uid": "uid-1"}  # fmt: skip
    assert body["eventTime"] == "2026-01-01T12:00:00.000000Z" and body["type"] == "Warning"
    book = SeriesBook()
    assert [book.record("x"), book.record("x")] == [1, 2]
    assert series_patch(2, NOW) == {
        "series": {"count": 2, "lastObservedTime": "2026-01-01T12:00:00.000000Z"}
    }


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


def test_cli_defaults_and_kopf_settings_keep_bookkeeping_off_user_objects() -> None:
    import kopf

    from podtrace_operator.main import operator_settings, parse_args

    args = parse_args(["--kubeconfig", "/tmp/k", "--pending-timeout", "90s"])
    assert (args.peering, args.standalone, args.priority) == ("podtrace-operator", False, None)
    assert args.pending_timeout == timedelta(seconds=90)
    assert parse_args(["--no-peering"]).standalone
    settings = operator_settings(args)
    assert isinstance(settings.persistence.progress_storage, kopf.StatusProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.StatusDiffBaseStorage)
    assert settings.posting.enabled is False
