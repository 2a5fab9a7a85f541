"""What the fault tests of the local cluster share (the apiserver outage, the runtime
outage, the event storm): the end-to-end `Loop` of test_e2e_loop.py (pods under the real
kubelet and containerd, `podtrace-operator --standalone` and `podtrace-agent run` as host
processes) on a cluster whose apiserver audits every write of podtrace's kinds and Events
(audit_log.py), with the agent's metrics served, and the figures these tests print: the
agent's memory, its metrics, the writes the apiserver saw.

    @pytest.fixture(scope="module")
    def traced(tmp_path_factory) -> Iterator[Traced]:
        yield from traced_cluster(tmp_path_factory)
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from audit_log import Write, audit_args, read_writes
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_loop import API, NS, POLICY, POLICY_FILE, Loop, condition

from harness.apiserver import free_port
from harness.localcluster import cluster_for_tests
from harness.podtrace_procs import Podtrace, install_crds

AGENT = "podtrace-agent ("  # the agent's User-Agent prefix (cluster/kube.py)
OPERATOR = "podtrace-operator ("  # the operator's (operator/main.py)


@dataclass
class Traced:
    loop: Loop
    audit_log: Path
    metrics_port: int

    @property
    def pt(self) -> Podtrace:
        return self.loop.podtrace

    def writes(self, since: datetime | None = None) -> list[Write]:
        """The writes the apiserver finished (after `since`, by its clock)."""
        return [w for w in read_writes(self.audit_log) if since is None or w.done > since]

    def agent_rss_kib(self) -> int:
        """The agent's resident memory now (VmRSS)."""
        for line in Path(f"/proc/{self.pt.agent_pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the agent's /metrics (0 when absent), read without the apiserver."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return float(sample.value)
        return 0.0

    def gate(self, name: str) -> str:
        """One more FIFO in the pods' gate directory; its path inside a pod."""
        os.mkfifo(self.loop.gate_dir / name, 0o600)
        return f"/gate/{name}"

    def marked(self, name: str) -> bool:
        """Whether a workload wrote the marker file `name` in the gate directory."""
        return (self.loop.gate_dir / name).exists()

    def policy_and_trace(self, trace: str | None = None) -> None:
        """The example shell policy (namespace NS labelled env=prod), and a ContainerTrace
        `trace` of the app=web pods when named."""
        loop = self.loop
        loop.cluster.ensure_namespace(NS)
        loop.cluster.kubectl("label", "namespace", NS, "env=prod", "--overwrite")
        loop.cluster.kubectl("apply", "-f", str(POLICY_FILE))
        loop.wait_valid("tracingpolicy", POLICY)
        if trace:
            loop.apply({"apiVersion": API, "kind": "ContainerTrace",
                        "metadata": {"name": trace, "namespace": NS},
                        "spec": {"selector": {"matchLabels": {"app": "web"}}}})  # fmt: skip
            loop.wait_valid("containertrace", trace, NS)

    def nt_condition(self, kind: str) -> dict[str, Any]:
        return condition((self.loop.nodetracer().get("status") or {}), kind)


def traced_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """Body of a module fixture: the audited cluster, podtrace on it, the agent Ready."""
    args, log = audit_args(tmp_path_factory.mktemp("audit"))
    for cluster in cluster_for_tests(extra_apiserver_args=args):
        assert cluster.apiserver is not None
        install_crds(cluster.apiserver.binaries.kubectl, cluster.kubeconfig)
        port = free_port()
        with Podtrace(cluster.kubeconfig, node=cluster.node_name,
                      cri_endpoint=cluster.runtime_endpoint, metrics_port=port,
                      workdir=tmp_path_factory.mktemp("podtrace"),
                      kubepods=cluster.kubepods,  # not another kubepods on the host
                      seccomp_dir=cluster.seccomp_dir) as pt:
            traced = Traced(Loop(cluster, pt, tmp_path_factory.mktemp("gate")), log, port)
            pt.wait_agent_ready(cluster.apiserver.binaries.kubectl)
            yield traced


def rss_line(label: str, samples: dict[str, int]) -> str:
    """`label: before 51.2 MiB, peak during 53.0 MiB, after 52.1 MiB`."""
    return f"{label}: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in samples.items())


def sample_rss(traced: Traced, seconds: float, every: float = 2.0) -> int:
    """Watch the agent for `seconds` (it must stay alive); its peak RSS in KiB."""
    peak = 0
    end = time.monotonic() + seconds
    while True:
        traced.pt.check_alive()
        peak = max(peak, traced.agent_rss_kib())
        left = end - time.monotonic()
        if left <= 0:
            return peak
        time.sleep(min(every, left))


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
