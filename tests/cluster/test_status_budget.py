"""Issue 10 part 3 against the real apiserver: the NodeTracer of a full node (256 pods of
4 containers with names of the longest a container may have, 32 sources, 6 on each
container, hundreds of distinct syscalls and programs per container with filenames of
the longest the kernel reports, ASCII or not, every rule of every policy matched, with
the longest rule names, sources not applied, lost events) is computed by the agent's own
state and status code, written through its own StatusWriter and Kube.patch_status,
accepted, and stays within STATUS_BUDGET_BYTES; so does the ContainerTrace status the
operator merges from it. What the lists leave out is counted, and the totals are exact."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.apiserver import LocalAPIServer
from podtrace_agent.backend import BackendStats, ExecEvent, SourceLimits
from podtrace_agent.cluster.kube import Kube, load_config
from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView
from podtrace_agent.cluster.state import KnownCgroup, NodeState
from podtrace_agent.cluster.status import Health, node_status
from podtrace_agent.cluster.writer import StatusWriter
from podtrace_agent.discovery.report import (
    BackendReport,
    BccCheck,
    CgroupReport,
    DiscoveryReport,
    KernelReport,
)
from podtrace_api.budget import (
    ETCD_OBJECT_LIMIT_BYTES,
    MAX_NODE_PROFILES,
    MAX_NOT_APPLIED_ROWS,
    STATUS_BUDGET_BYTES,
    TOP_EXECS,
    TOP_SYSCALLS,
)
from podtrace_api.conditions import get_condition
from podtrace_api.containertrace import ContainerTraceSpec, ContainerTraceStatus
from podtrace_api.nodetracer import BackendName, CgroupVersion, NodeTracerSpec, RuntimeStatus
from podtrace_api.syscalls import name_of
from podtrace_operator.profiles import ProfileBook
from podtrace_operator.reports import node_report
from podtrace_operator.tallies import Ledger
from podtrace_operator.trace_status import TraceInput, trace_status

NODE = "budget-node"
WALL = datetime(2026, 1, 1, tzinfo=UTC)
PODS, CONTAINERS = 256, 4  # MAX_NODE_TARGETS
NAMESPACES = 21
POLICIES = 10  # each selects every other pod; each namespace has one trace: 6 sources a target
RULES = 32  # the most a policy may have, each matched
SYSCALLS = 330  # distinct syscall numbers each container makes
PROGRAMS = 40  # distinct programs each container runs, besides the rules' ones
CALLS = 10**12  # counts wide enough to take every digit a count can
WIDE = "TracingPolicy/wide"  # asks a prefix too long for the kernel: not applied


def _policy(i: int) -> dict[str, Any]:
    rules = [{"name": _rule(j), "reason": "ProgramRan",
              "execFilenames": [f"/opt/rules/policy-{i:02d}/program-{j:02d}"]}
             for j in range(RULES)]
    return {"id": f"TracingPolicy/policy-{i:02d}", "kind": "TracingPolicy",
            "name": f"policy-{i:02d}", "rules": rules}


def _spec() -> NodeTracerSpec:
    sources = [_policy(i) for i in range(POLICIES)]
    sources += [{"id": f"ContainerTrace/team-{n:02d}/record", "kind": "ContainerTrace",
                 "name": "record", "namespace": f"team-{n:02d}", "profile": True}
                for n in range(NAMESPACES)]  # fmt: skip
    sources.append({"id": WIDE, "kind": "TracingPolicy", "name": "wide",
                    "observe": {"fileOpens": {"pathPrefixes": ["/" + "\u00e9" * 50]}}})
    targets = []
    for p in range(PODS):
        ns = _ns(p)
        chosen = [f"TracingPolicy/policy-{i:02d}" for i in range(p % 2, POLICIES, 2)]
        chosen.append(f"ContainerTrace/{ns}/record")
        if p in WIDE_PODS:
            chosen.append(WIDE)
        for c in range(CONTAINERS):
            targets.append({"podUid": _uid(p), "container": _container(c), "namespace": ns,
                            "pod": f"checkout-service-7d9f8b6c5-{p:05d}", "sources": chosen})
    return NodeTracerSpec.model_validate({"sources": sources, "targets": targets})


def _rule(j: int) -> str:
    return f"rule-{j:02d}-".ljust(63, "r")  # a rule name at its longest


def _container(c: int) -> str:
    return f"container-{c}-".ljust(63, "c")  # a container name at its longest


def _ns(p: int) -> str:
    """Half the pods in team-00 (its trace selects 512 containers: more than a trace's
    status lists), the rest spread over the other namespaces."""
    return "team-00" if p < PODS // 2 else f"team-{1 + p % (NAMESPACES - 1):02d}"


WIDE_PODS = [p for p in range(PODS) if p % 10 == 0]


def _uid(p: int) -> str:
    return f"00000000-0000-4000-8000-{p:012d}"


def _cgroup(p: int, c: int) -> int:
    return 10_000 + p * CONTAINERS + c


def _programs(p: int, c: int) -> list[str]:
    """Filenames of 255 bytes, the longest the kernel reports; some not ASCII (their
    escapes are cut to the 255 characters status keeps)."""
    out = []
    for k in range(PROGRAMS):
        stem = f"/usr/local/lib/app-{p}-{c}-{k:02d}/bin/"
        fill = "\u00e9" * ((255 - len(stem)) // 2) if k % 2 else "x" * (255 - len(stem))
        out.append(stem + fill)
    return out


def _full_node() -> NodeState:
    state = NodeState(limits=SourceLimits(open_prefix_bytes=64))
    spec = _spec()
    state.set_spec(spec, 7)
    for p in range(PODS):
        containers = {_container(c): PodContainer(f"{p:032x}{c:032x}", "registry.example/"
                                                     "shop/checkout:1.2.3", True)
                      for c in range(CONTAINERS)}
        state.set_pod(PodView(_uid(p), _ns(p),
                              f"checkout-service-7d9f8b6c5-{p:05d}", containers))
        for c in range(CONTAINERS):
            state.add_cgroup(KnownCgroup(
                CgroupRef(_cgroup(p, c), f"kubepods/besteffort/pod{_uid(p)}/{p:032x}{c:032x}"),
                f"{p:032x}{c:032x}", _uid(p), _container(c)))
    changes, _ = state.replan(0.0, WALL)
    state.applied(changes)
    for p in range(PODS):
        for c in range(CONTAINERS):
            cgroup = _cgroup(p, c)
            rules = [f"/opt/rules/policy-{i:02d}/program-{j:02d}"
                     for i in range(p % 2, POLICIES, 2) for j in range(RULES)]
            for filename in _programs(p, c) + rules:
                state.on_event(ExecEvent(cgroup, 1, 1, 0, "x", filename, 0), WALL)
    counts = {_cgroup(p, c): {nr: CALLS + nr for nr in range(SYSCALLS)}
              for p in range(PODS) for c in range(CONTAINERS)}
    lost = {_cgroup(p, 0): 12345 for p in range(PODS)}
    state.on_counts(counts, lost)
    state.on_workload(counts, {})  # traced while running: every syscall is the workload's
    return state


def _status(state: NodeState) -> dict[str, Any]:
    report = DiscoveryReport(
        kernel=KernelReport("6.18.44", True, "/sys/kernel/tracing"),
        cgroup=CgroupReport(CgroupVersion.HYBRID, root="/sys/fs/cgroup/unified",
                            kubepods_path="kubepods", kubepods_id=42, kubepods_level=1),
        bcc=BccCheck(True, "ok"),
        backend=BackendReport(BackendName.FTRACE, "BCC cannot compile here"),
    )
    health = Health(True, RuntimeStatus(name="containerd", endpoint="unix:///x"), "ok")
    stats = BackendStats(10**9, 12345 * PODS)
    return node_status(report=report, health=health, stats=stats, state=state, previous=[],
                       now=WALL, agent_version="test").to_wire()


def _size(value: Any) -> int:
    """Bytes as the apiserver stores it (compact JSON; status text is plain ASCII)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _get(api: LocalAPIServer, *args: str) -> dict[str, Any]:
    """The object as stored, managedFields included (kubectl hides them by default)."""
    out = api.kubectl("get", *args, "-o", "json", "--show-managed-fields").stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def full_node() -> tuple[NodeState, dict[str, Any], float]:
    state = _full_node()
    began = time.monotonic()
    status = _status(state)
    return state, status, time.monotonic() - began


def test_a_full_node_s_status_is_written_through_the_agent_s_writer(
    apiserver: LocalAPIServer, crds_installed: list[str],
    full_node: tuple[NodeState, dict[str, Any], float],
) -> None:
    state, status, seconds = full_node
    spec = state.spec.to_wire()
    body = {"apiVersion": "podtrace.io/v1alpha1", "kind": "NodeTracer",
            "metadata": {"name": NODE}, "spec": spec}
    apiserver.kubectl("create", "-f", "-", input=json.dumps(body))  # no last-applied copy

    kube = Kube(load_config(str(apiserver.kubeconfig)), NODE)
    writer = StatusWriter(kube.patch_status, interval=0)
    assert writer.offer(status, time.monotonic()), writer.last_error

    stored = _get(apiserver, "nodetracer", NODE)
    sizes = {"status": _size(stored["status"]), "spec": _size(stored["spec"]),
             "managedFields": _size(stored["metadata"]["managedFields"]),
             "object": _size(stored)}
    print(f"\nfull node: {len(status['targets'])} targets, {len(status['sources'])} sources; "
          f"status computed in {seconds:.2f} s; bytes: {sizes}")
    assert sizes["status"] <= STATUS_BUDGET_BYTES, sizes
    # managedFields are kept: an object too large for etcd with them would have had them
    # dropped by the apiserver's retry of the patch. Lists written whole are atomic, so
    # they cost a few hundred bytes, not a field per target.
    managers = {(m["manager"], m.get("subresource")) for m in stored["metadata"]
                ["managedFields"]}
    # The agent's client names itself (its User-Agent is the field manager).
    assert (kube.api.user_agent, "status") in managers, managers
    assert sizes["managedFields"] < 4096 and sizes["object"] < ETCD_OBJECT_LIMIT_BYTES, sizes
    assert stored["status"]["observedGeneration"] == 7

    # Everything is there, cut where a list is full, with counts of what was left out.
    assert len(stored["status"]["targets"]) == PODS * CONTAINERS
    rows = {r["source"]: r for r in stored["status"]["sources"]}
    assert len(rows) == POLICIES + NAMESPACES + 1
    policy = rows["TracingPolicy/policy-00"]
    assert (policy["targets"], policy["applied"]) == (PODS // 2 * CONTAINERS,) * 2
    result = policy["results"]
    containers = PODS // 2 * CONTAINERS
    assert len(result["syscalls"]) == TOP_SYSCALLS
    assert result["syscallsOmitted"] == SYSCALLS - TOP_SYSCALLS
    assert result["syscallsTotal"] == containers * sum(CALLS + nr for nr in range(SYSCALLS))
    assert len(result["execs"]) == TOP_EXECS
    assert result["execsTotal"] == containers * (PROGRAMS + POLICIES // 2 * RULES)
    assert result["execsOmitted"] == result["execsTotal"] - sum(e["count"] for e in result["execs"])
    assert {e["count"] for e in result["execs"]} == {containers}  # the rules' programs
    assert result["ruleMatches"] == [{"rule": _rule(j), "count": containers}
                                     for j in range(RULES)]
    assert result["eventsLost"] == PODS // 2 * 12345
    wide = rows[WIDE]
    refused = len(WIDE_PODS) * CONTAINERS
    assert (wide["targets"], wide["notApplied"], wide["reason"]) == (
        refused, refused, "LimitExceeded")
    assert len(stored["status"]["notApplied"]) == MAX_NOT_APPLIED_ROWS
    assert stored["status"]["notAppliedOmitted"] == refused - MAX_NOT_APPLIED_ROWS


def test_the_trace_merged_from_it_stays_within_the_budget(
    apiserver: LocalAPIServer, crds_installed: list[str],
    full_node: tuple[NodeState, dict[str, Any], float], tmp_path: Path,
) -> None:
    state, status, _ = full_node
    sid = "ContainerTrace/team-00/record"
    report = node_report({"metadata": {"name": NODE, "generation": 7},
                          "spec": state.spec.to_wire(), "status": status})
    ledger = Ledger()
    ledger.observe(NODE, report)
    targets = [(NODE, t.model_dump(by_alias=True)) for t in state.spec.targets
               if sid in t.sources]
    book = ProfileBook()
    book.observe(NODE, report.profiles, [t for _, t in targets], name_of,
                 report.profiles_omitted, frozenset({sid}))
    spec = {"selector": {}, "seccompProfile": {"defaultAction": "SCMP_ACT_ERRNO"}}
    out = trace_status(
        TraceInput("record", "team-00", 1, WALL, ContainerTraceSpec.model_validate(spec), (),
                   None),
        source_id=sid, targets=targets, reports={NODE: report}, tally=ledger.total(sid),
        arches=["amd64"], now=WALL, pending_timeout=timedelta(minutes=5), top_n=64,
        image_of=lambda uid, c: "registry.example/shop/checkout:1.2.3",
        profiles=book.containers(sid), profiles_omitted=book.omitted_on(sid),
    ).status
    apiserver.kubectl("create", "namespace", "team-00")
    apiserver.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "podtrace.io/v1alpha1", "kind": "ContainerTrace",
        "metadata": {"name": "record", "namespace": "team-00"}, "spec": spec}))
    patch = tmp_path / "status.json"  # too large for one argument of argv
    patch.write_text(json.dumps({"status": out.to_wire()}))
    apiserver.kubectl("patch", "containertrace", "record", "-n", "team-00",
                      "--subresource=status", "--type=merge", "--patch-file", str(patch))
    stored = _get(apiserver, "containertrace", "record", "-n", "team-00")
    size = _size(stored["status"])
    print(f"\ntrace of {len(targets)} containers: status {size} bytes")
    assert size <= STATUS_BUDGET_BYTES
    back = ContainerTraceStatus.model_validate(stored["status"])
    assert back.target_count == len(targets) == PODS // 2 * CONTAINERS
    assert len(back.targets) == 256 and back.syscalls is not None
    assert back.syscalls.distinct == SYSCALLS and back.seccomp_profile is not None
    # Every syscall, not only the top, in each container's profile (of the replicas the
    # node listed: 128 of its targets; the others are counted and make it incomplete).
    assert back.seccomp_profile.syscalls == SYSCALLS
    assert len(back.seccomp_profile.containers) == CONTAINERS
    assert all(len(c.syscalls) == SYSCALLS for c in back.seccomp_profile.containers)
    assert book.omitted_on(sid) == {NODE: PODS * CONTAINERS - MAX_NODE_PROFILES}
    assert get_condition(back.conditions, "ProfileComplete").status == "False"
    assert back.execs_omitted > 0 and back.events_lost > 0
    assert {c.type: c.status for c in back.conditions}["ProfileComplete"] == "False"
