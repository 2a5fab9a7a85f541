"""Installed profiles (ContainerTrace seccompProfile.install) on a real kube-apiserver,
the operator under its own roles (manifests/base, a ServiceAccount token): one install
ConfigMap per trace in podtrace-system, status from what the agents report, and none
left behind when traces go, in a burst (`kubectl delete ct --all`, a list or a write
may be under way meanwhile) or while no operator runs. The agents' side (files on a
real kubelet's disk) is tests/cluster/test_e2e_loop.py and tests/install."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from operator_helpers import (
    apply,
    get,
    namespace,
    node,
    nodetracer,
    operator_role_kubeconfig,
    pod,
    report_as_agent,
    running,
    trace,
    wait_for,
    wait_targets,
)

from harness.apiserver import LocalAPIServer
from podtrace_api.seccompinstall import INSTALL_LABEL, INSTALL_NAMESPACE, digest
from podtrace_api.syscalls import number_of
from podtrace_api.syscallset import encode

NS, OTHER_NS, NODE = "inst", "inst-other", "inst-n1"
TRACES = ["a", "b", "c", "d", "e"]
SYSCALLS = ["read", "write", "exit_group"]


@pytest.fixture(scope="module")
def kubeconfig(apiserver: LocalAPIServer, crds_installed: list[str]) -> Iterator[Path]:
    namespace(apiserver, INSTALL_NAMESPACE)
    yield operator_role_kubeconfig(apiserver)
    # Other modules share this apiserver: leave no trace of ours, also after a failure
    # (a profile-building trace left here would be written to SPO by their operators).
    for ns in (NS, OTHER_NS):
        apiserver.kubectl("delete", "containertraces", "--all", "-n", ns, "--ignore-not-found")
    apiserver.kubectl("delete", "configmaps", "-n", INSTALL_NAMESPACE, "-l", INSTALL_LABEL,
                      "--ignore-not-found")  # fmt: skip


def published(api: LocalAPIServer) -> dict[str, dict[str, Any]]:
    out = api.kubectl("get", "configmaps", "-n", INSTALL_NAMESPACE, "-l", INSTALL_LABEL,
                      "-o", "json")  # fmt: skip
    return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}


def record_all(api: LocalAPIServer, pods: dict[str, dict[str, Any]], installed: list[str]
               ) -> None:  # fmt: skip
    """Report, as the node's agent would, each pod's workload syscalls and, heartbeat
    and all, the install ConfigMap versions `installed` (<uid>:<digest>)."""
    sources = [f"ContainerTrace/{ns}/{name}" for name, ns in
               [(t, NS) for t in TRACES] + [("keep", OTHER_NS)]]  # fmt: skip
    wait_targets(api, NODE, sources[0], [("p", NS, "main")])
    report_as_agent(
        api, NODE,
        [{"podUid": p["metadata"]["uid"], "container": "main", "state": "Tracing"}
         for p in pods.values()],
        {sid: {"since": "2026-01-01T00:00:00Z", "syscallsTotal": 1,
               "syscalls": [{"name": "read", "count": 1}],
               "syscallSet": encode([number_of("read")])} for sid in sources},
        [{"podUid": p["metadata"]["uid"], "container": "main", "startSeen": True,
          "syscallSet": encode(number_of(n) for n in SYSCALLS)} for p in pods.values()],
    )  # fmt: skip
    # Every node's agent (other modules' nodes share this apiserver) wrote them.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"status": {"lastHeartbeatTime": now, "seccompProfiles": {
        "directory": "/var/lib/kubelet/seccomp", "installed": installed}}}
    for name in nodetracer_names(api):
        api.kubectl("patch", "nodetracers.podtrace.io", name, "--subresource=status",
                    "--type=merge", "-p", json.dumps(patch))  # fmt: skip


def nodetracer_names(api: LocalAPIServer) -> list[str]:
    out = api.kubectl("get", "nodetracers.podtrace.io", "-o", "json")
    return sorted(o["metadata"]["name"] for o in json.loads(out.stdout)["items"])


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == kind), {})


def test_every_trace_publishes_its_profiles_and_none_is_left_when_they_go(
    apiserver: LocalAPIServer, kubeconfig: Path
) -> None:
    api = apiserver
    apply(api, node(NODE))
    namespace(api, NS)
    namespace(api, OTHER_NS)
    pods = {ns: pod(api, "p", ns, NODE, {"app": "inst"}, containers=["main"])
            for ns in (NS, OTHER_NS)}  # fmt: skip
    spec = {"selector": {"matchLabels": {"app": "inst"}}, "seccompProfile": {"install": True}}
    with running(api, "--pending-timeout=1h", kubeconfig=kubeconfig, name="inst") as op:
        wait_for("the Lease", lambda: op.probe().get("active"), 60)
        apply(api, *(trace(t, NS, spec) for t in TRACES), trace("keep", OTHER_NS, spec))
        wait_targets(api, NODE, f"ContainerTrace/{OTHER_NS}/keep", [("p", OTHER_NS, "main")])
        record_all(api, pods, [])
        names = [f"seccomp.{NS}.{t}" for t in TRACES] + [f"seccomp.{OTHER_NS}.keep"]
        maps = wait_for("an install ConfigMap per trace",
                        lambda: (m := published(api)) and sorted(m) == sorted(names) and m)
        cm = maps[f"seccomp.{NS}.a"]
        assert sorted(cm["data"]) == ["a-main.json"]
        assert cm["metadata"]["annotations"]["podtrace.io/trace"] == f"{NS}/a"
        profile = json.loads(cm["data"]["a-main.json"])
        assert profile["syscalls"][0]["names"] == sorted(SYSCALLS)

        # Not on the node yet: the trace says so and why.
        status = get(api, "containertrace", "a", NS)["status"]
        assert status["seccompProfile"]["containers"][0]["localhostProfile"] == \
            f"podtrace/{NS}/a-main.json"
        assert condition(get(api, "containertrace", "a", NS), "ProfileInstalled")["reason"] \
            == "Installing"

        # The agent reports it wrote every version: all Installed, on 1 of 1 nodes.
        versions = [f"{m['metadata']['annotations']['podtrace.io/trace-uid']}:"
                    f"{digest(m['data'])}" for m in maps.values()]  # fmt: skip
        record_all(api, pods, versions)
        done = wait_for("trace a's ProfileInstalled", lambda: (
            c := condition(get(api, "containertrace", "a", NS), "ProfileInstalled"))
            .get("status") == "True" and c)
        nodes = nodetracer_names(api)
        assert f"installed on {len(nodes)} of {len(nodes)} nodes, for pods to use as " \
               f"localhostProfile podtrace/{NS}/a-main.json" == done["message"]
        assert get(api, "containertrace", "a", NS)["status"]["seccompProfile"]["installed"] \
            == {"nodes": nodes, "installedNodes": len(nodes), "totalNodes": len(nodes),
                "missing": []}

        # All of one namespace's traces at once: every ConfigMap goes, the other stays.
        api.kubectl("delete", "containertraces", "--all", "-n", NS, "--wait=false")
        wait_for("the deleted traces' install ConfigMaps to go",
                 lambda: sorted(published(api)) == [f"seccomp.{OTHER_NS}.keep"], 30)
        assert nodetracer(api, NODE) is not None

    # Deleted while no operator runs: swept when one starts.
    api.kubectl("delete", "containertrace", "keep", "-n", OTHER_NS)
    assert sorted(published(api)) == [f"seccomp.{OTHER_NS}.keep"]
    with running(api, "--pending-timeout=1h", kubeconfig=kubeconfig, name="inst-2") as op:
        wait_for("the Lease", lambda: op.probe().get("active"), 60)
        wait_for("the install ConfigMap of a trace deleted meanwhile to go",
                 lambda: published(api) == {}, 60)
        assert "Traceback" not in op.text()
