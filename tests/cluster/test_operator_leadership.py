"""Two operator replicas on a real apiserver, electing their writer with the Lease of
manifests/base, under the operator's ServiceAccount token and RBAC.

The apiserver audits every write of podtrace's kinds, Events and Leases (request
and stored object; `audit_log.py`), so what is checked is what reached the
apiserver, from either process, the one killed with SIGKILL included:

- a standby writes nothing; a clean stop hands the Lease over at once;
- `kill -9` of the writer in the middle of a burst of policy, trace, pod, node and
  namespace changes: the standby takes over within the lease duration plus one
  retry (the figures are printed), the two never write at the same time, the
  final NodeTracer specs equal a from-scratch compile of what the apiserver holds,
  no write is a no-op and none was refused for a stale view, no Event is written
  twice for one status transition and every stored transition has its Events.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from audit_log import Write, audit_args, no_ops, read_writes, stale_conflicts
from operator_helpers import (
    REPO,
    Operator,
    apply,
    get,
    install_crds,
    namespace,
    node,
    pod,
    policy,
    trace,
    wait_for,
    wait_targets,
)

from harness import prereq
from harness.apiserver import LocalAPIServer
from harness.k8s_binaries import PrerequisiteMissing, ensure_binaries
from podtrace_api import API_VERSION
from podtrace_api.containertrace import ContainerTraceStatus
from podtrace_api.tracingpolicy import TracingPolicyStatus
from podtrace_operator.compiler import compile_cluster
from podtrace_operator.events import (
    MAX_NOTE,
    EventSpec,
    EventType,
    ObjectRef,
    new_event,
    occurrence,
    raised_by,
)
from podtrace_operator.inventory import labels_of, name_of, pod_record
from podtrace_operator.leadership import LeaseTimes
from podtrace_operator.policy_status import policy_events
from podtrace_operator.sources import parse_policy, parse_trace
from podtrace_operator.trace_status import is_active, trace_events

SYSTEM = "podtrace-system"
LEASE = "podtrace-operator"
AGENT = "podtrace-operator ("  # the operator's User-Agent prefix (kube.py)
TIMES = LeaseTimes()  # the defaults the Deployment runs with


@dataclass
class Audited:
    api: LocalAPIServer
    log: Path
    kubeconfig: Path

    def writes(self) -> list[Write]:
        return read_writes(self.log)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    """An apiserver of its own, auditing writes; the operator's RBAC and token."""
    try:
        binaries = ensure_binaries(kubelet=False)
    except PrerequisiteMissing as exc:
        prereq.missing(str(exc))
        raise
    args, log = audit_args(tmp_path_factory.mktemp("audit"))
    with LocalAPIServer(binaries, extra_apiserver_args=args) as api:
        install_crds(api)
        for manifest in ("namespace.yaml", "operator-rbac.yaml"):
            api.kubectl("apply", "-f", str(REPO / "manifests" / "base" / manifest))
        token = api.make_token(SYSTEM, "podtrace-operator", duration="2h")
        yield Audited(api, log, api.token_kubeconfig(token, "podtrace-operator"))


def replica(a: Audited, name: str) -> Operator:
    return Operator(a.api, f"--namespace={SYSTEM}", f"--lease={LEASE}",
                    "--pending-timeout=1h", kubeconfig=a.kubeconfig, name=name).start()  # fmt: skip


def identity_of(op: Operator | None) -> str:
    """The Lease holder identity of a replica (main.identity: namespace/host/pid)."""
    assert op is not None and op.proc is not None
    return f"{SYSTEM}/{socket.gethostname()}/{op.proc.pid}"


def agent_of(op: Operator | None) -> str:
    """The User-Agent of a replica's writes (main.run)."""
    return f"podtrace-operator ({identity_of(op)})"


def lease(a: Audited) -> dict[str, Any]:
    return json.loads(a.api.kubectl("get", "lease", LEASE, "-n", SYSTEM, "-o", "json").stdout)


def holder(a: Audited) -> str:
    return str(lease(a)["spec"].get("holderIdentity") or "")


def holds(a: Audited, op: Operator | None) -> bool:
    return holder(a) == identity_of(op)


def took_lease_at(writes: list[Write], identity: str) -> datetime | None:
    """When `identity` first became the holder, by the apiserver's clock."""
    for w in sorted(writes, key=lambda w: w.done):
        spec = (w.response or {}).get("spec") or {}
        if w.resource == "leases" and w.accepted and spec.get("holderIdentity") == identity:
            return w.done
    return None


def work_writes(writes: list[Write], agent: str) -> list[Write]:
    """`agent`'s accepted writes other than the Lease."""
    return [w for w in writes if w.by(agent) and w.accepted and w.resource != "leases"]


def log_lines(op: Operator, what: str) -> int:
    return op.text().count(what)


def test_a_standby_writes_nothing_and_a_clean_stop_hands_over_at_once(audited: Audited) -> None:
    api = audited.api
    apply(api, node("ld-n1"))
    namespace(api, "ld")
    pod(api, "p1", "ld", "ld-n1", {"app": "ld"})
    first = replica(audited, "first")
    second: Operator | None = None
    try:
        first.wait_synced()
        wait_for("the first replica to hold the Lease", lambda: holds(audited, first))
        second = replica(audited, "second").wait_synced()
        apply(api, policy("ld", {"selector": {"podSelector": {"matchLabels": {"app": "ld"}}}}))
        wait_targets(api, "ld-n1", "TracingPolicy/ld", [("p1", "ld", "app")])
        time.sleep(TIMES.retry * 2)
        assert holder(audited) == identity_of(first)
        assert work_writes(audited.writes(), agent_of(second)) == [], "the standby wrote"
        assert work_writes(audited.writes(), agent_of(first)), "the holder wrote nothing"

        stopped = datetime.now(UTC)
        assert first.stop() == 0, first.tail()
        assert "released" in first.text()
        wait_for("the standby to take the Lease", lambda: holds(audited, second),
                 timeout=TIMES.retry + 5)  # fmt: skip
        taken = took_lease_at(audited.writes(), identity_of(second))
        assert taken is not None
        handover = (taken - stopped).total_seconds()
        print(f"\nclean stop: the standby held the Lease {handover:.2f}s after SIGTERM")
        assert handover < TIMES.retry + 3, "a released Lease waits for no duration"
        pod(api, "p2", "ld", "ld-n1", {"app": "ld"})
        wait_targets(api, "ld-n1", "TracingPolicy/ld", [("p1", "ld", "app"), ("p2", "ld", "app")])
        assert lease(audited)["spec"]["leaseTransitions"] >= 1
    finally:
        if second is not None:
            second.stop()
        first.stop()


# -- kill -9 in the middle of a burst ---------------------------------------------------------


def world(api: LocalAPIServer) -> None:
    for name, zone in (("fo-n1", "a"), ("fo-n2", "b"), ("fo-n3", "a")):
        apply(api, node(name, {"zone": zone}))
    namespace(api, "fo-a", {"env": "prod"})
    namespace(api, "fo-b", {"env": "dev"})
    for ns, name, node_name, app in (("fo-a", "web-1", "fo-n1", "web"),
                                     ("fo-a", "web-2", "fo-n2", "web"),
                                     ("fo-a", "db-1", "fo-n3", "db"),
                                     ("fo-b", "web-1", "fo-n1", "web"),
                                     ("fo-b", "db-1", "fo-n2", "db")):  # fmt: skip
        pod(api, name, ns, node_name, {"app": app}, containers=("app", "sidecar"))
    apply(api, policy("fo-web", selecting("web")), policy("fo-prod", in_namespaces(env="prod")),
          trace("fo-trace", "fo-a", {"selector": matching(app="web")}))  # fmt: skip


def matching(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def selecting(app: str, **extra: Any) -> dict[str, Any]:
    return {"selector": {"podSelector": matching(app=app), **extra}}


def on_nodes(**labels: str) -> dict[str, Any]:
    return {"selector": {"nodeSelector": matching(**labels)}}


def in_namespaces(**labels: str) -> dict[str, Any]:
    return {"selector": {"namespaceSelector": matching(**labels)}}


BAD_RULE = {"rules": [{"name": "x", "reason": "X", "syscalls": ["no_such_syscall"]}]}


def burst(api: LocalAPIServer) -> list[Callable[[], object]]:
    """The changes, in order; each one kubectl call (or two for a pod and its status)."""
    k = api.kubectl
    return [
        lambda: apply(api, policy("fo-zone", on_nodes(zone="a"))),
        lambda: pod(api, "web-3", "fo-a", "fo-n3", {"app": "web"}),
        lambda: apply(api, policy("fo-bad", BAD_RULE)),
        lambda: k("label", "node", "fo-n2", "zone=a", "--overwrite"),
        lambda: pod(api, "web-2", "fo-b", "fo-n2", {"app": "web"}),
        lambda: apply(api, policy("fo-web", selecting("web", containers=["sidecar"]))),
        lambda: apply(api, trace("fo-trace-db", "fo-b", {"selector": matching(app="db")})),
        lambda: k("delete", "pod", "web-1", "-n", "fo-a", "--grace-period=0", "--force"),
        lambda: apply(api, node("fo-n4", {"zone": "b"})),
        lambda: pod(api, "web-4", "fo-a", "fo-n4", {"app": "web"}),
        lambda: k("label", "namespace", "fo-b", "env=prod", "--overwrite"),
        # The kill comes right after this one, once the writer is writing its outcome.
        lambda: apply(
            api,
            policy("fo-m1", selecting("db")),
            policy("fo-m2", selecting("web")),
            policy("fo-m3", on_nodes(zone="b")),
        ),
        lambda: k("delete", "tracingpolicy", "fo-zone"),
        lambda: k("delete", "node", "fo-n3"),
        lambda: apply(api, policy("fo-bad", selecting("db"))),  # fixed: Invalid → Accepted
        lambda: apply(api, policy("fo-late", selecting("web", containers=["app"]))),
        lambda: k("label", "pod", "db-1", "-n", "fo-b", "app=web", "--overwrite"),
        lambda: k("delete", "containertrace", "fo-trace", "-n", "fo-a"),
    ]


KILL_AFTER = 11  # the step that applies three policies at once


def after_takeover(api: LocalAPIServer) -> list[Callable[[], object]]:
    k = api.kubectl
    return [
        lambda: apply(api, node("fo-n5", {"zone": "a"})),
        lambda: pod(api, "web-5", "fo-b", "fo-n5", {"app": "web"}),
        lambda: k("delete", "tracingpolicy", "fo-prod"),
        lambda: apply(api, policy("fo-m2", selecting("db"))),
        lambda: k("label", "namespace", "fo-a", "env=dev", "--overwrite"),
        lambda: apply(api, policy("fo-again", in_namespaces(env="dev"))),
    ]


def items(api: LocalAPIServer, kind: str) -> list[dict[str, Any]]:
    out = api.kubectl("get", kind, "--all-namespaces", "-o", "json").stdout
    return json.loads(out)["items"]


def from_scratch(api: LocalAPIServer) -> dict[str, Any]:
    """compile_cluster over what the apiserver holds now."""
    traces = [
        parse_trace(body, active=is_active(_status(ContainerTraceStatus, body), True)).source
        for body in items(api, "containertraces.podtrace.io")
    ]
    policies = [parse_policy(body).source for body in items(api, "tracingpolicies.podtrace.io")]
    return compile_cluster(
        [pod_record(p) for p in items(api, "pods")],
        {name_of(n): labels_of(n) for n in items(api, "namespaces")},
        {name_of(n): labels_of(n) for n in items(api, "nodes")},
        [s for s in policies + traces if s is not None],
    )


def stored_specs(api: LocalAPIServer) -> dict[str, Any]:
    return {name_of(nt): nt.get("spec") or {} for nt in items(api, "nodetracers.podtrace.io")}


def _status(model: type[Any], body: dict[str, Any] | None) -> Any:
    raw = (body or {}).get("status")
    return model.model_validate(raw) if raw else None


def quiet(a: Audited, seconds: float) -> bool:
    """No operator wrote anything (the Lease aside) for `seconds`."""
    done = [w.done for w in a.writes() if w.by(AGENT) and w.resource != "leases"]
    return not done or (datetime.now(UTC) - max(done)).total_seconds() > seconds


EVENT_SIDE = {"tracingpolicies": (TracingPolicyStatus, policy_events),
              "containertraces": (ContainerTraceStatus, trace_events)}  # fmt: skip


def transitions(writes: list[Write]) -> dict[str, list[tuple[Any, Any]]]:
    """Per object UID, the status transitions the operators stored, in order, as models."""
    by_uid: dict[str, list[Write]] = {}
    for w in writes:
        if w.by(AGENT) and w.accepted and w.subresource == "status" and w.resource in EVENT_SIDE:
            by_uid.setdefault(w.response["metadata"]["uid"], []).append(w)  # type: ignore[index]
    out: dict[str, list[tuple[Any, Any]]] = {}
    for uid, ws in by_uid.items():
        model = EVENT_SIDE[ws[0].resource][0]
        previous = None
        for w in sorted(ws, key=lambda w: w.stored_version or 0):
            now = model.model_validate(w.response["status"])  # type: ignore[index]
            out.setdefault(uid, []).append((previous, now))
            previous = now
    return out


def check_events(writes: list[Write]) -> tuple[int, int]:
    """Every Event write is one of a stored transition's, none twice, none missing.
    Returns (Event writes, stored transitions)."""
    event_writes = [w for w in writes if w.by(AGENT) and w.accepted and w.resource == "events"]
    occurrences = Counter((w.namespace, w.name, raised_by(w.response or {}))
                          for w in event_writes)  # fmt: skip
    twice = {key: n for key, n in occurrences.items() if n > 1}
    assert not twice, f"Events written more than once for one transition: {twice}"

    written: Counter[tuple[str, str, str, str, str]] = Counter()
    for w in event_writes:
        e = w.response or {}
        written[(e["regarding"]["uid"], str(raised_by(e)), e["type"], e["reason"], e["note"])] += 1
    stored = transitions(writes)
    expected: Counter[tuple[str, str, str, str, str]] = Counter()
    keys: dict[str, set[str]] = {}
    kinds = {w.response["metadata"]["uid"]: w.resource for w in writes  # type: ignore[index]
             if w.by(AGENT) and w.accepted and w.resource in EVENT_SIDE}  # fmt: skip
    for uid, steps in stored.items():
        raise_events = EVENT_SIDE[kinds[uid]][1]
        for old, new in steps:
            key = occurrence(old.to_wire() if old else {})
            keys.setdefault(uid, set()).add(key)
            for spec in raise_events(old, new):
                expected[(uid, key, str(spec.type), spec.reason, spec.note[:MAX_NOTE])] += 1
    missing = expected - written
    assert not missing, f"stored transitions whose Events were never written: {missing}"
    unknown = [k for k in written if k[1] not in keys.get(k[0], set())]
    assert not unknown, f"Events raised from a status that was never stored: {unknown}"
    return len(event_writes), sum(len(s) for s in stored.values())


def test_kill_9_of_the_writer_mid_burst(audited: Audited) -> None:
    api = audited.api
    world(api)
    first = replica(audited, "killed")
    second: Operator | None = None
    try:
        first.wait_synced()
        wait_for("the first replica to hold the Lease", lambda: holds(audited, first))
        wait_for("the initial specs", lambda: stored_specs(api) == from_scratch(api), 60)
        second = replica(audited, "standby").wait_synced()
        steps = burst(api)
        for step in steps[: KILL_AFTER + 1]:
            step()
        # Kill while the writer is writing the outcome of the last step: right after its
        # first write that follows it, with the rest still to come.
        written = log_lines(first, " written")
        wait_for("the writer to start writing", lambda: log_lines(first, " written") > written,
                 timeout=10, interval=0.005)  # fmt: skip
        killed = datetime.now(UTC)
        first.stop(signal.SIGKILL)
        reaped = datetime.now(UTC)
        for step in steps[KILL_AFTER + 1 :]:
            step()
        wait_for("the standby to take the Lease", lambda: holds(audited, second),
                 timeout=TIMES.duration + TIMES.retry + 10)  # fmt: skip
        for step in after_takeover(api):
            step()
        wait_for("NodeTracer specs == a from-scratch compile",
                 lambda: stored_specs(api) == from_scratch(api), 60)  # fmt: skip
        wait_for("the writer to go quiet", lambda: quiet(audited, 3), 60, interval=0.5)
        assert stored_specs(api) == from_scratch(api)
    finally:
        if second is not None:
            second.stop()
        first.stop()

    writes = audited.writes()
    a, b = agent_of(first), agent_of(second)
    a_work, b_work = work_writes(writes, a), work_writes(writes, b)
    assert a_work and b_work, "both replicas must have written for the test to mean anything"
    # A write the killed replica had sent may complete after its death, never start after.
    assert max(w.received for w in a_work) <= reaped, "the killed replica wrote after its death"
    taken = took_lease_at(writes, identity_of(second))
    assert taken is not None
    first_write = min(w.received for w in b_work)
    assert taken <= first_write, "the standby wrote before it held the Lease"
    assert max(w.done for w in a_work) < first_write, "the two replicas wrote at the same time"
    takeover = (taken - killed).total_seconds()
    assert takeover <= TIMES.duration + TIMES.retry + 2, f"took {takeover:.1f}s"

    assert no_ops(writes, AGENT) == [], "writes that changed nothing (written twice)"
    assert stale_conflicts(writes, AGENT) == [], "a status decided from a stale view"
    event_writes, stored = check_events(writes)
    races = [w for w in writes if w.by(AGENT) and w.code == 409 and w.subresource == "status"]
    last_a = (max(w.done for w in a_work) - killed).total_seconds() * 1000
    print(
        f"\nkill -9 mid-burst: A's last write completed {last_a:+.0f} ms from the kill; "
        f"B held the Lease {takeover:.2f}s after it and wrote "
        f"{(first_write - killed).total_seconds():.2f}s after it "
        f"(lease duration {TIMES.duration:.0f}s, retry {TIMES.retry:.0f}s)\n"
        f"writes: A {len(a_work)}, B {len(b_work)}; status transitions stored {stored}, "
        f"Event writes {event_writes}; no-op writes 0, Events written twice 0, stale-view "
        f"refusals 0, refusals racing a user's edit {len(races)}"
    )


# -- the crash window between an Event and its status write -----------------------------------


def status_of(api: LocalAPIServer, policy_name: str) -> dict[str, Any]:
    return (get(api, "tracingpolicy", policy_name) or {}).get("status") or {}


def raised_by_a_dead_replica(api: LocalAPIServer, name: str, key: str) -> str:
    """Create the Accepted Event a replica raises for policy `name` before writing its
    status, for the transition `key`, as if that replica died right after; its name."""
    body = json.loads(api.kubectl("get", "tracingpolicy", name, "-o", "json").stdout)
    ref = ObjectRef(API_VERSION, "TracingPolicy", name, body["metadata"]["uid"])
    accepted = EventSpec(EventType.NORMAL, "Accepted", "policy accepted", "Compile")
    event = new_event(ref, accepted, datetime.now(UTC), "podtrace-system/dead/1", key)
    api.kubectl("create", "-f", "-", input=json.dumps(event))
    return str(event["metadata"]["name"])


def test_an_event_raised_by_a_replica_that_died_before_its_status_write_is_not_repeated(
    audited: Audited,
) -> None:
    api = audited.api
    apply(api, node("cw-n1"))
    apply(api, policy("cw-died", selecting("cw")), policy("cw-earlier", selecting("cw")))
    # The stored status is empty: the transition out of it has the key occurrence({}).
    died = raised_by_a_dead_replica(api, "cw-died", occurrence({}))
    earlier = raised_by_a_dead_replica(api, "cw-earlier", "an-earlier-transition")
    op = replica(audited, "after-crash")
    try:
        op.wait_synced()
        for name in ("cw-died", "cw-earlier"):
            wait_for(f"{name}'s status", lambda n=name: status_of(api, n).get("conditions"))
        wait_for("the writer to go quiet", lambda: quiet(audited, 3), 60, interval=0.5)
    finally:
        op.stop()
    events = {e["metadata"]["name"]: e for e in items(api, "events.v1.events.k8s.io")}
    assert "series" not in events[died], "the dead replica's Event was raised again"
    assert events[earlier]["series"]["count"] == 2, "a new transition must grow the series"
    ours = [w.name for w in work_writes(audited.writes(), agent_of(op)) if w.resource == "events"]
    assert died not in ours and earlier in ours


# -- control: without the Lease, the same checks catch two writers -----------------------------


def test_without_the_lease_two_writers_are_caught_by_these_checks(audited: Audited) -> None:
    """The checks above can fail: two --standalone replicas (no Lease) both write."""
    api = audited.api
    ops = [Operator(api, "--standalone", kubeconfig=audited.kubeconfig, name=f"rogue{i}").start()
           for i in range(2)]  # fmt: skip
    try:
        for op in ops:
            op.wait_synced()
        apply(api, *(node(f"tw-n{i}") for i in range(6)))
        apply(api, *(policy(f"tw-{i}", in_namespaces(env="prod")) for i in range(6)))
        wait_for("the writers to go quiet", lambda: quiet(audited, 3), 60, interval=0.5)
    finally:
        for op in ops:
            op.stop()
    writes = audited.writes()
    both = [work_writes(writes, agent_of(op)) for op in ops]
    assert all(both), "both rogue writers wrote"
    caught = no_ops(writes, AGENT) + [w for w, _ in stale_conflicts(writes, AGENT)]
    print(f"\ntwo writers without the Lease: {len(no_ops(writes, AGENT))} no-op writes, "
          f"{len(stale_conflicts(writes, AGENT))} stale-view refusals")  # fmt: skip
    assert caught, "two writers went unnoticed"
