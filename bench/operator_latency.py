"""How long a TracingPolicy change takes to reach the NodeTracer spec, on the
test tier's real kube-apiserver + etcd with `podtrace-operator` as a process.

Prints figures, passes or fails nothing. Run (the binaries are built once by
`make binaries`):

    PYTHONPATH=tests:tests/cluster .venv/bin/python bench/operator_latency.py

Each round edits the policy's spec with `kubectl apply` (so its generation moves)
and polls the NodeTracer until its source carries that generation. Reported: the
median over the rounds from starting `kubectl apply`, and from `kubectl apply`
returning (the operator's part: watch event, compile, patch).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from operator_helpers import REPO, apply, namespace, node, pod, policy, running

from harness.apiserver import LocalAPIServer
from harness.k8s_binaries import ensure_binaries

SOURCE = "TracingPolicy/latency"


def spec_generation(api: LocalAPIServer, node_name: str) -> int | None:
    nt = api.get_json(f"/apis/podtrace.io/v1alpha1/nodetracers/{node_name}")
    for source in (nt.get("spec") or {}).get("sources") or []:
        if source["id"] == SOURCE:
            return int(source["generation"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--crds", type=Path, default=REPO / "crds")
    args = parser.parse_args()

    with LocalAPIServer(ensure_binaries()) as api:
        api.kubectl("apply", "--server-side", "-k", str(args.crds))
        api.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/tracingpolicies.podtrace.io", "crd/nodetracers.podtrace.io",
                    "crd/containertraces.podtrace.io")  # fmt: skip
        with running(api, "--standalone"):
            apply(api, node("lat-n1"))
            namespace(api, "lat")
            pod(api, "p", "lat", "lat-n1", {"app": "lat"})
            totals, after_kubectl, kubectl_times = [], [], []
            for i in range(args.rounds + 1):
                spec = {"selector": {"podSelector": {"matchLabels": {"app": "lat"}}},
                        "observe": {"processes": {"exec": True, "exit": i % 2 == 1}}}  # fmt: skip
                start = time.perf_counter()
                apply(api, policy("latency", spec))
                applied = time.perf_counter()
                while spec_generation(api, "lat-n1") != i + 1:
                    time.sleep(0.005)
                done = time.perf_counter()
                if i == 0:
                    continue  # the first round creates the policy (and warms caches)
                totals.append(done - start)
                after_kubectl.append(done - applied)
                kubectl_times.append(applied - start)

    def ms(values: list[float]) -> str:
        values = sorted(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        return (f"median {statistics.median(values) * 1000:.0f} ms "
                f"(min {values[0] * 1000:.0f}, p90 {p90 * 1000:.0f}, "
                f"max {values[-1] * 1000:.0f})")  # fmt: skip

    print(f"policy change -> NodeTracer spec, {args.rounds} rounds")
    print(f"  from starting kubectl apply: {ms(totals)}")
    print(f"  from kubectl apply returning: {ms(after_kubectl)}")
    print(f"  kubectl apply itself:         {ms(kubectl_times)}")


if __name__ == "__main__":
    main()
