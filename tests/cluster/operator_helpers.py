"""Helpers for the operator's cluster tests: run `podtrace-operator` as a real
process against the test apiserver, make Nodes, Namespaces and Pods as plain
objects (no kubelet: status is written through the status subresource, as a
kubelet would), act as a node agent on NodeTracer status, and wait for things."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness import prereq
from harness.apiserver import LocalAPIServer, free_port

REPO = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).with_name("podtrace-operator")
CRDS_DIR = REPO / "crds"
API = "podtrace.io/v1alpha1"
T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0,
             interval: float = 0.1) -> T:  # fmt: skip
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Operator:
    """One `podtrace-operator` process and its log."""

    def __init__(self, api: LocalAPIServer, *args: str, kubeconfig: Path | None = None,
                 name: str = "operator") -> None:  # fmt: skip
        self.api = api
        self.port = free_port()
        self.log = api.workdir / f"{name}-{self.port}.log"
        self.argv = [
            str(OPERATOR), f"--kubeconfig={kubeconfig or api.kubeconfig}",
            f"--liveness=http://127.0.0.1:{self.port}/healthz", "--verbose",
            # The agents here are written by hand (report_as_agent) and send no
            # heartbeats: no NodeTracer goes Ready Unknown in a long module. Heartbeats are
            # tested in the unit tier and tests/install (a test may pass its own).
            "--heartbeat-timeout=1h", *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return json.loads(r.read() or b"{}")
        except (OSError, ValueError):
            return None

    def probe(self) -> dict[str, Any]:
        return (self.health() or {}).get("podtrace") or {}

    def wait_synced(self, timeout: float = 60.0) -> Operator:
        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            return bool(self.probe().get("synced"))

        wait_for("the operator to list everything", ready, timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


@contextmanager
def running(api: LocalAPIServer, *args: str, **kw: Any) -> Iterator[Operator]:
    op = Operator(api, *args, **kw).start()
    try:
        yield op.wait_synced()
    finally:
        op.stop()


def install_crds(apiserver: LocalAPIServer) -> list[str]:
    """Apply crds/ to `apiserver` and wait until every CRD is Established and published."""
    if not any(CRDS_DIR.glob("*.yaml")) and not any(CRDS_DIR.glob("*.yml")):
        prereq.missing("crds/ is empty: run make crds")
    applied = apiserver.kubectl(
        "apply", "--server-side", "--field-manager=podtrace-tests", "-o", "name",
        "-k", str(CRDS_DIR),
    )  # fmt: skip
    names = [line.split("/", 1)[1] for line in applied.stdout.split() if line]
    apiserver.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)
    )
    # Established comes before the kinds are in discovery and OpenAPI (explain).
    deadline = time.monotonic() + 60
    for name in names:
        while apiserver.kubectl("explain", name.split(".", 1)[0], check=False).returncode:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} is Established but not published in OpenAPI after 60s")
            time.sleep(0.2)
    return names


def operator_role_kubeconfig(api: LocalAPIServer) -> Path:
    """A kubeconfig with a ServiceAccount token of the operator's identity, under the
    ClusterRole and Lease Role of manifests/base (applied here)."""
    for manifest in ("namespace.yaml", "operator-rbac.yaml"):
        api.kubectl("apply", "-f", str(REPO / "manifests" / "base" / manifest))
    token = api.make_token("podtrace-system", "podtrace-operator", duration="2h")
    return api.token_kubeconfig(token, "podtrace-operator")


# -- objects -----------------------------------------------------------------------------------


def apply(api: LocalAPIServer, *objs: dict[str, Any]) -> None:
    """`kubectl apply` (client-side, as a user or GitOps tool would)."""
    api.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": list(objs)}))  # fmt: skip


def get(api: LocalAPIServer, kind: str, name: str, namespace: str | None = None) -> dict | None:
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
    if namespace:
        args += ["-n", namespace]
    out = api.kubectl(*args).stdout
    return json.loads(out) if out.strip() else None


def node(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/arch": "amd64",
                                                  **(labels or {})}}}  # fmt: skip


def namespace(api: LocalAPIServer, name: str, labels: dict[str, str] | None = None) -> None:
    """A Namespace with its `default` ServiceAccount (Pods need it; no controller-manager
    makes it). Not through `ensure_service_account`: its server-side apply of the
    Namespace would take over, and drop, the labels applied here."""
    apply(api, {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}}})  # fmt: skip
    apply(api, {"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name}})  # fmt: skip


def pod(api: LocalAPIServer, name: str, ns: str, node_name: str, labels: dict[str, str],
        containers: Sequence[str] = ("app",), init: Sequence[str] = (),
        phase: str = "Running") -> dict[str, Any]:  # fmt: skip
    """Create a Pod bound to `node_name` and give it a status, as a kubelet would."""
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": c, "image": "busybox"} for c in containers],
            "initContainers": [{"name": c, "image": "busybox"} for c in init],
        },
    }  # fmt: skip
    apply(api, body)
    set_pod_phase(api, name, ns, phase)
    got = get(api, "pod", name, ns)
    assert got is not None
    return got


def set_pod_phase(api: LocalAPIServer, name: str, ns: str, phase: str) -> None:
    api.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"phase": phase}}))  # fmt: skip


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "TracingPolicy", "metadata": {"name": name}, "spec": spec}


def trace(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ContainerTrace",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}  # fmt: skip


# -- NodeTracers -------------------------------------------------------------------------------


def nodetracer(api: LocalAPIServer, node_name: str) -> dict[str, Any] | None:
    return get(api, "nodetracers.podtrace.io", node_name)


def targets_of(api: LocalAPIServer, node_name: str, source: str) -> list[tuple[str, str, str]]:
    """(pod name, namespace, container) of the NodeTracer targets listing `source`."""
    nt = nodetracer(api, node_name) or {}
    return sorted(
        (t["pod"], t["namespace"], t["container"])
        for t in (nt.get("spec") or {}).get("targets", [])
        if source in t["sources"]
    )


def wait_targets(api: LocalAPIServer, node_name: str, source: str,
                 expected: list[tuple[str, str, str]], timeout: float = 30.0) -> None:  # fmt: skip
    wait_for(f"{source} targets on {node_name} == {expected}",
             lambda: targets_of(api, node_name, source) == sorted(expected), timeout)  # fmt: skip


def report_as_agent(api: LocalAPIServer, node_name: str, targets: list[dict[str, Any]],
                    results: dict[str, dict[str, Any]] | None = None,
                    profiles: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the NodeTracer status a node agent would: applied this spec, Ready, `targets`,
    each source's `results` (by source id) and the targets' workload `profiles`."""
    nt = nodetracer(api, node_name)
    assert nt is not None
    status = {
        "observedGeneration": nt["metadata"]["generation"],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Tracing",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "targets": targets,
        "sources": [{"source": sid, "results": r} for sid, r in (results or {}).items()],
        "profiles": profiles or [],
    }  # fmt: skip
    api.kubectl("patch", "nodetracers.podtrace.io", node_name, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip
    return nt


# -- Events ------------------------------------------------------------------------------------


def events_about(api: LocalAPIServer, kind: str, name: str,
                 namespace: str = "default") -> list[dict[str, Any]]:  # fmt: skip
    """events.k8s.io/v1 Events regarding one object."""
    out = api.kubectl("get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json").stdout
    return [e for e in json.loads(out)["items"]
            if e.get("regarding", {}).get("kind") == kind
            and e.get("regarding", {}).get("name") == name]  # fmt: skip


def reasons(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["reason"]) for e in events}
