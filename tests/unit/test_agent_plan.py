"""The agent's plan: spec targets × pods on the node × known cgroups."""

from __future__ import annotations

from podtrace_agent.cluster.plan import CgroupRef, PodContainer, PodView, plan
from podtrace_api.containertrace import TargetState
from podtrace_api.nodeconfig import Probe
from podtrace_api.nodetracer import NodeTracerSpec

SPEC = NodeTracerSpec.model_validate({
    "sources": [
        {"id": "TracingPolicy/files", "kind": "TracingPolicy", "name": "files",
         "observe": {"syscalls": {"mode": "None"}, "processes": {"exec": False},
                     "fileOpens": {"pathPrefixes": ["/etc/"]}, "connects": {"ports": [443]}}},
        {"id": "ContainerTrace/shop/rec", "kind": "ContainerTrace", "name": "rec",
         "namespace": "shop"},
    ],
    "targets": [
        {"podUid": "u1", "container": "app", "namespace": "shop", "pod": "p1",
         "sources": ["ContainerTrace/shop/rec", "TracingPolicy/files"]},
        {"podUid": "u1", "container": "side", "namespace": "shop", "pod": "p1",
         "sources": ["TracingPolicy/files"]},
        {"podUid": "u2", "container": "app", "namespace": "shop", "pod": "p2",
         "sources": ["ContainerTrace/shop/rec"]},
        {"podUid": "u3", "container": "app", "namespace": "shop", "pod": "p3",
         "sources": ["ContainerTrace/shop/rec"]},
    ],
})

PODS = {
    "u1": PodView("u1", "shop", "p1", {
        "app": PodContainer("c1", "busybox", running=True),
        "side": PodContainer("c2", "busybox", running=True),
    }),
    "u2": PodView("u2", "shop", "p2", {"app": PodContainer(None, "busybox")}),
}
CGROUPS = {"c1": CgroupRef(101, "kubepods/besteffort/podu1/c1")}


def test_states_say_why_a_target_is_not_traced() -> None:
    result = plan(SPEC, PODS, CGROUPS)
    states = {key: (p.state, p.message) for key, p in result.targets.items()}
    assert states[("u1", "app")] == (TargetState.TRACING, "")
    assert states[("u1", "side")][0] is TargetState.PENDING
    assert "no cgroup for container c2" in states[("u1", "side")][1]
    assert states[("u2", "app")] == (TargetState.PENDING, "container has not started yet")
    assert states[("u3", "app")] == (TargetState.PENDING, "pod not seen on this node yet")


def test_probes_are_the_union_of_the_sources() -> None:
    result = plan(SPEC, PODS, CGROUPS)
    request = result.traces[101]
    assert request.mask == Probe.SYSCALLS | Probe.EXEC | Probe.OPEN | Probe.CONNECT
    assert request.open_prefixes == ("/etc/",) and request.connect_ports == (443,)
    assert result.cgroup_targets == {101: ("u1", "app")}
    assert list(result.traces) == [101]


def test_an_unchanged_input_gives_an_equal_plan() -> None:
    assert plan(SPEC, PODS, CGROUPS) == plan(SPEC, PODS, CGROUPS)


def test_runtime_names_resolve_before_the_pod_status() -> None:
    cgroups = {**CGROUPS, "c9": CgroupRef(109, "kubepods/besteffort/podu3/c9")}
    result = plan(SPEC, PODS, cgroups, named={("u3", "app"): "c9"})
    assert result.targets[("u3", "app")].state is TargetState.TRACING
    assert result.cgroup_targets[109] == ("u3", "app")
