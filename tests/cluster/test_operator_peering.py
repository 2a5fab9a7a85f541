"""Two operator replicas on one apiserver, coordinated by kopf peering: only the
higher-priority one writes, a spec change is written once and does not flap,
and the standby takes over (with a fresh listing) when the active one stops."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from operator_helpers import (
    PEERING_MANIFEST,
    Operator,
    apply,
    namespace,
    node,
    nodetracer,
    pod,
    policy,
    wait_for,
    wait_targets,
)

from harness.apiserver import LocalAPIServer

SRC = "TracingPolicy/pe"


@pytest.fixture(scope="module")
def peering(apiserver: LocalAPIServer, crds_installed: list[str]) -> Iterator[None]:
    apiserver.kubectl("apply", "-f", str(PEERING_MANIFEST))
    apiserver.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      "crd/clusterkopfpeerings.kopf.dev")  # fmt: skip
    yield


def spec_writes(op: Operator, node_name: str) -> int:
    return len(re.findall(rf"NodeTracer {re.escape(node_name)}: spec written", op.text()))


def generation(api: LocalAPIServer, node_name: str) -> int:
    nt = nodetracer(api, node_name)
    assert nt is not None
    return int(nt["metadata"]["generation"])


def test_two_replicas_do_not_fight_and_the_standby_takes_over(
    apiserver: LocalAPIServer, peering: None
) -> None:
    api = apiserver
    apply(api, node("pe-n1"))
    namespace(api, "pe")
    pod(api, "p1", "pe", "pe-n1", {"app": "pe"})
    pod(api, "p2", "pe", "pe-n1", {"app": "pe"})
    tp = policy("pe", {"selector": {"podSelector": {"matchLabels": {"app": "pe"}}}})

    low = Operator(api, "--priority=10", name="low").start()
    high: Operator | None = None
    try:
        low.wait_synced()
        wait_for("the low replica to become active", lambda: low.probe().get("active"))
        assert "created ClusterKopfPeering podtrace-operator" in low.text()
        apply(api, tp)
        wait_targets(api, "pe-n1", SRC, [("p1", "pe", "app"), ("p2", "pe", "app")])

        high = Operator(api, "--priority=20", name="high").start()
        wait_for("the high replica to become active", lambda: high.probe().get("active"), 60)
        wait_for("the low replica to stand by", lambda: low.probe().get("active") is False)
        assert "Pausing operations in favour of" in low.text()  # kopf paused its watches

        # A change is written once, by the active replica only, and stays put.
        low_writes = spec_writes(low, "pe-n1")
        before = generation(api, "pe-n1")
        apply(api, policy("pe", {"selector": {"podSelector": {"matchLabels": {"app": "pe"}},
                                              "containers": ["app"]}}))  # fmt: skip
        wait_for("the spec to follow the change", lambda: generation(api, "pe-n1") > before)
        time.sleep(3)
        assert generation(api, "pe-n1") == before + 1, "the spec was written more than once"
        assert spec_writes(low, "pe-n1") == low_writes, "the standby wrote"
        assert spec_writes(high, "pe-n1") >= 1

        # While the low replica stands by, the cluster changes under it.
        api.kubectl("delete", "pod", "p1", "-n", "pe", "--grace-period=0", "--force")
        pod(api, "p3", "pe", "pe-n1", {"app": "pe"})
        wait_targets(api, "pe-n1", SRC, [("p2", "pe", "app"), ("p3", "pe", "app")])

        high.stop()
        wait_for("the low replica to take over", lambda: low.probe().get("active"), 60)
        # It re-listed on taking over: its next write knows p1 is gone and p3 is there.
        wait_for("the re-list", lambda: "re-listed after a pause" in low.text(), 30)
        apply(api, policy("pe", {
            "selector": {"podSelector": {"matchLabels": {"app": "pe"}}},
            "observe": {"processes": {"exec": True, "exit": True}},
        }))  # fmt: skip
        wait_for("the low replica to write", lambda: spec_writes(low, "pe-n1") > low_writes)
        nt = nodetracer(api, "pe-n1")
        assert nt is not None
        source = next(s for s in nt["spec"]["sources"] if s["id"] == SRC)
        assert source["observe"]["processes"]["exit"] is True
        pods = sorted({t["pod"] for t in nt["spec"]["targets"] if SRC in t["sources"]})
        assert pods == ["p2", "p3"]
    finally:
        if high is not None:
            high.stop()
        low.stop()
