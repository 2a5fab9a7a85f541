"""How long a TracingPolicy takes from `kubectl apply` to its target being in the
node's BPF map (issue 12 part 6), on the test tier's real kube-apiserver + etcd
with `podtrace-operator` and `podtrace-agent run` as processes
(cluster_session.py). Prints figures, passes or fails nothing.

Each round creates a policy selecting one running Pod with `kubectl apply` and
polls the agent's `traced` map (every 2 ms) until the container's cgroup is
there with the policy's probes; then deletes the policy and waits until the
entry is gone (also timed). Reported: median, p95 and max of the rounds, from
starting `kubectl apply` (kubectl's own start-up included, as a user meets
it) and from `kubectl apply` returning.

Run as root (the binaries are built once by `make binaries`):

    PYTHONPATH=tests:bench .venv/bin/python bench/operator_latency.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cluster_session import Session, session
from common import need_root, summary

from podtrace_api.nodeconfig import Probe

POLICY = "bench-latency"
TIMEOUT_S = 60.0


def wait(what: str, done: Any) -> float:
    deadline = time.perf_counter() + TIMEOUT_S
    while not done():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: not within {TIMEOUT_S:.0f} s")
        time.sleep(0.002)
    return time.perf_counter()


def measure(s: Session, rounds: int = 20) -> dict[str, Any]:
    (target,) = s.pods(1, {"app": "latency"})
    cgroup = target.cgroup_id
    spec = {"selector": {"podSelector": {"matchLabels": {"app": "latency"}}},
            "observe": {"syscalls": {"mode": "All"}, "processes": {"exec": True}}}  # fmt: skip
    body = json.dumps({"apiVersion": "podtrace.io/v1alpha1", "kind": "TracingPolicy",
                       "metadata": {"name": POLICY}, "spec": spec})  # fmt: skip
    wanted = int(Probe.SYSCALLS | Probe.EXEC)
    applied, after_kubectl, removed = [], [], []
    for i in range(rounds + 1):
        start = time.perf_counter()
        s.kubectl("apply", "-f", "-", input=body)
        returned = time.perf_counter()
        done = wait("the target in the BPF map",
                    lambda: ((s.in_map(cgroup) or 0) & wanted) == wanted)
        start_delete = time.perf_counter()
        s.kubectl("delete", "tracingpolicy", POLICY, "--wait=false")
        gone = wait("the target out of the BPF map", lambda: s.in_map(cgroup) is None)
        if i == 0:
            continue  # the first round warms caches (kubectl's discovery, the operator's)
        applied.append(done - start)
        after_kubectl.append(done - returned)
        removed.append(gone - start_delete)
    return {"rounds": rounds, "apply_to_map_s": summary(applied),
            "kubectl_returned_to_map_s": summary(after_kubectl),
            "delete_to_out_of_map_s": summary(removed)}  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    print(f"TracingPolicy -> target in the node's BPF map, {result['rounds']} rounds")
    for key, label in (("apply_to_map_s", "from starting kubectl apply"),
                       ("kubectl_returned_to_map_s", "from kubectl apply returning"),
                       ("delete_to_out_of_map_s", "kubectl delete -> out of the map")):
        r = result[key]
        print(f"  {label:<34} median {r['median'] * 1000:6.0f} ms, p95 {r['p95'] * 1000:6.0f} ms,"
              f" min {r['min'] * 1000:5.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    need_root()
    with session() as s:
        print_table(measure(s, args.rounds))


if __name__ == "__main__":
    main()
