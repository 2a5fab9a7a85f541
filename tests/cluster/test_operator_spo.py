"""SPO interop on a real kube-apiserver: the operator, under its own ClusterRole
(manifests/base, a ServiceAccount token), writes each profile of a trace's ConfigMap
also as a Security Profiles Operator `SeccompProfile` once SPO's real CRD
(fixtures/spo/seccompprofile-crd.yaml, vendored from SPO) is installed, even when that
happens after the operator started. The apiserver validates every object against
SPO's schema and prunes what the schema does not know, so reading the spec back equal
to the ConfigMap's profile shows our JSON is a valid SPO spec. The objects go with
their trace, also when it was deleted while the operator was down. Without the CRD,
nothing fails and the ConfigMap is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_helpers import (
    apply,
    get,
    namespace,
    node,
    operator_role_kubeconfig,
    pod,
    report_as_agent,
    running,
    trace,
    wait_for,
    wait_targets,
)

from harness.apiserver import LocalAPIServer
from podtrace_api.syscalls import number_of
from podtrace_api.syscallset import encode

CRD = Path(__file__).parent / "fixtures" / "spo" / "seccompprofile-crd.yaml"
CRD_NAME = "seccompprofiles.security-profiles-operator.x-k8s.io"
NS, NODE = "spo", "spo-n1"
# Ours only: other modules' traces on this apiserver may have SeccompProfiles too.
REC, KEEP = (f"podtrace.io/trace={t},podtrace.io/trace-namespace={NS}" for t in ("rec", "keep"))
PROFILES = {"web": ["read", "write", "futex", "exit_group"], "side": ["nanosleep", "read"]}


@pytest.fixture(scope="module")
def kubeconfig(apiserver: LocalAPIServer, crds_installed: list[str]) -> Iterator[Path]:
    yield operator_role_kubeconfig(apiserver)
    # Other modules share this apiserver: leave it without SPO, as it was.
    apiserver.kubectl("delete", "-f", str(CRD), "--ignore-not-found", "--wait=true")


def spo_objects(api: LocalAPIServer, selector: str) -> dict[str, dict[str, Any]] | None:
    """Our SeccompProfiles by name; None while the kind is not served."""
    out = api.kubectl("get", CRD_NAME, "-l", selector, "-o", "json", check=False)
    if out.returncode:
        return None
    return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}


def record(api: LocalAPIServer, name: str, pods: list[dict[str, Any]]) -> None:
    """Report, as the node's agent would, each pod's containers' workload syscalls."""
    source = f"ContainerTrace/{NS}/{name}"
    wait_targets(api, NODE, source, [(p["metadata"]["name"], NS, c)
                                     for p in pods for c in PROFILES])  # fmt: skip
    uids = [p["metadata"]["uid"] for p in pods]
    report_as_agent(
        api, NODE,
        [{"podUid": u, "container": c, "state": "Tracing"} for u in uids for c in PROFILES],
        {source: {"since": "2026-01-01T00:00:00Z", "syscalls": [{"name": "read", "count": 1}],
                  "syscallsTotal": 1, "syscallSet": encode([number_of("read")])}},
        [{"podUid": u, "container": c, "startSeen": True,
          "syscallSet": encode(number_of(n) for n in names)}
         for u in uids for c, names in PROFILES.items()],
    )  # fmt: skip


def install_spo_crd(api: LocalAPIServer) -> None:
    api.kubectl("apply", "--server-side", "--field-manager=podtrace-tests", "-f", str(CRD))
    api.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")


def no_errors(log: str) -> None:
    bad = [line for line in log.splitlines()
           if "forbidden" in line.lower() or "Traceback" in line or " ERROR " in line]  # fmt: skip
    assert not bad, "\n".join(bad[:20])


def test_profiles_become_seccompprofiles_once_spo_is_installed_and_go_with_the_trace(
    apiserver: LocalAPIServer, kubeconfig: Path
) -> None:
    api = apiserver
    apply(api, node(NODE))
    namespace(api, NS)
    p = pod(api, "p", NS, NODE, {"app": "spo"}, containers=list(PROFILES))
    with running(api, "--pending-timeout=1h", kubeconfig=kubeconfig, name="spo") as op:
        wait_for("the Lease", lambda: op.probe().get("active"), 60)
        apply(api, trace("rec", NS, {"selector": {"matchLabels": {"app": "spo"}},
                                     "seccompProfile": {}}))  # fmt: skip
        record(api, "rec", [p])
        cm = wait_for("the seccomp ConfigMap", lambda: get(api, "configmap", "rec-seccomp", NS))
        assert sorted(cm["data"]) == ["side.json", "web.json"]
        # Without SPO: the ConfigMap only, the kind is not even served, nothing failed.
        assert spo_objects(api, REC) is None
        no_errors(op.text())

        install_spo_crd(api)  # after the operator started: it notices
        selector = "podtrace.io/trace=rec,podtrace.io/trace-namespace=spo"
        objs = wait_for("both SeccompProfiles",
                        lambda: (o := spo_objects(api, selector)) and len(o) == 2 and o)
        assert sorted(objs) == ["spo.rec.side", "spo.rec.web"]
        for container in PROFILES:
            obj = objs[f"spo.rec.{container}"]
            # Read back after the apiserver validated and pruned it against SPO's schema.
            assert obj["spec"] == {**json.loads(cm["data"][f"{container}.json"]),
                                   "state": "Enabled"}  # SPO's one defaulted field
            assert obj["spec"]["syscalls"] == [{"names": sorted(PROFILES[container]),
                                                "action": "SCMP_ACT_ALLOW"}]  # fmt: skip
            assert obj["metadata"]["labels"] == {
                "app.kubernetes.io/managed-by": "podtrace-operator",
                "podtrace.io/trace": "rec", "podtrace.io/trace-namespace": NS,
                "podtrace.io/container": container,
            }  # fmt: skip
            assert "namespace" not in obj["metadata"]  # cluster-scoped in SPO's CRD
            assert "ownerReferences" not in obj["metadata"]

        # A second trace whose objects must survive the first one's deletion.
        apply(api, trace("keep", NS, {"selector": {"matchLabels": {"app": "spo"}},
                                      "seccompProfile": {}}))  # fmt: skip
        record(api, "keep", [p])
        wait_for("the second trace's SeccompProfiles",
                 lambda: len(spo_objects(api, KEEP) or {}) == 2)  # fmt: skip
        api.kubectl("delete", "containertrace", "rec", "-n", NS)
        wait_for("the deleted trace's SeccompProfiles to go",
                 lambda: spo_objects(api, REC) == {})  # fmt: skip
        assert len(spo_objects(api, KEEP) or {}) == 2
        no_errors(op.text())

    # Deleted while no operator runs: cleaned up when one starts.
    api.kubectl("delete", "containertrace", "keep", "-n", NS)
    assert len(spo_objects(api, KEEP) or {}) == 2
    with running(api, "--pending-timeout=1h", kubeconfig=kubeconfig, name="spo-2") as op:
        wait_for("the Lease", lambda: op.probe().get("active"), 60)
        wait_for("SeccompProfiles of a trace deleted meanwhile to go",
                 lambda: spo_objects(api, KEEP) == {}, 60)  # fmt: skip
        no_errors(op.text())
