"""Issue 11 part 1 through the API: `podtrace-agent run` (bcc, pinned) for a node
of a real apiserver, with the operator, traces a pod's container for a
ContainerTrace; the agent is killed with SIGKILL in the middle of 20,000,000
getppid calls, the container execs /bin/true while no agent runs, and a new
agent of the same node goes on from what the last status written held. The
ContainerTrace's totals are then exactly the workload's (20,000,000 getppid, 2
execs of /bin/true: one before the kill, one while no agent ran) and stay so:
nothing lost, nothing counted twice. With a status interval of 30 s, the kill
comes before the agent wrote anything of the workload: the new agent reads the
first exec again from the ring buffer (it was read by the killed one).

The container's cgroup is made by hand below this host's kubepods, and the Pod's
status is written as a kubelet would (test_nested_cgroupns does the same).
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kernel_support import Hierarchy, run_helper
from test_nested_cgroupns import (  # noqa: F401 - control_plane is a fixture
    ControlPlane,
    control_plane,
    running_pod,
    wait_until,
)
from test_standalone import START_TIMEOUT_S, Agent

N = 20_000_000

pytestmark = pytest.mark.timeout(900)


def drained(agent: Agent) -> list[dict[str, Any]]:
    """Every line the agent printed (it has exited)."""
    while True:
        try:
            line = agent._queue.get(timeout=5)
        except Exception:
            return agent.lines
        if line is None:
            return agent.lines
        agent.lines.append(line)


def agent_command(node: str, kubeconfig: Path, instance: str, interval: str) -> list[str]:
    agent = Path(sys.executable).with_name("podtrace-agent")
    return [str(agent), "run", "--node-name", node, "--kubeconfig", str(kubeconfig),
            "--backend", "bcc", "--kubepods", "kubepods", "--status-interval", interval,
            "--metrics-port", "0", "--instance", instance]


@pytest.mark.parametrize("interval", ["1s", "30s"])
def test_agent_killed_and_restarted_loses_and_doubles_nothing(
    control_plane: ControlPlane, hierarchy: Hierarchy, helper: Path, tmp_path: Path,  # noqa: F811
    instance: str, interval: str,
) -> None:
    cp = control_plane
    suffix = uuid.uuid4().hex[:6]
    node, ns = f"restart-node-{suffix}", f"restart-{suffix}"
    cp.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    cp.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    cp.apply({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "default", "namespace": ns}})
    cp.apply({"apiVersion": "podtrace.io/v1alpha1", "kind": "ContainerTrace",
              "metadata": {"name": "rec", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "web"}}}})
    cid = uuid.uuid4().hex * 2
    uid = running_pod(cp, "web", ns, node, cid)
    container = hierarchy.mkdir(hierarchy.cgroup2 / "kubepods" / "besteffort" / f"pod{uid}" / cid)
    command = agent_command(node, cp.kubeconfig, instance, interval)

    def tracing() -> bool:
        targets = (cp.get("nodetracer", node).get("status") or {}).get("targets") or []
        return any(t.get("containerId") == cid and t.get("state") == "Tracing" for t in targets)

    def totals() -> tuple[int, int]:
        status = cp.get("containertrace", "rec", ns).get("status") or {}
        execs = {e["filename"]: e["count"] for e in status.get("execs") or []}
        top = {s["name"]: s["count"] for s in (status.get("syscalls") or {}).get("top") or []}
        return top.get("getppid", 0), execs.get("/bin/true", 0)

    def show() -> dict[str, Any]:
        return {"ct": cp.get("containertrace", "rec", ns).get("status"),
                "operator": cp.operator_log.read_text()[-2000:]}

    first = Agent(command)
    second: Agent | None = None
    try:
        wait_until("the container Tracing", tracing, START_TIMEOUT_S,
                   show=lambda: cp.get("nodetracer", node).get("status"))
        early = run_helper(helper, container, 0, ("/bin/true",), wait_for_go=False,
                           tmp_path=tmp_path)
        assert early.wait() == 0
        run = run_helper(helper, container, N, ("/bin/true",), wait_for_go=True,
                         tmp_path=tmp_path)
        run.release()
        time.sleep(2.0)  # a status or two written mid-workload
        assert run.process.poll() is None, "the workload ended before the kill"
        before = totals()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
        assert run.wait() == 0  # it went on, and exec'd with no agent running

        second = Agent(command)
        try:
            wait_until("the ContainerTrace's exact totals", lambda: totals() == (N, 2), 120,
                       show=show)
        except BaseException:
            second.process.send_signal(signal.SIGTERM)
            second.process.wait(timeout=60)
            for name, agent in (("first", first), ("second", second)):
                print(f"--- {name} agent: exec lines", [
                    (x.get("filename"), x.get("pid"), x.get("time"))
                    for x in drained(agent) if x.get("type") == "exec"])
            print("--- second agent stderr\n" + second.stderr()[-4000:])
            raise
        time.sleep(5)  # several more status writes and operator passes: still exact
        after = totals()
        second.process.send_signal(signal.SIGTERM)
        second.finish(timeout=120)
        resumed = [line for line in second.stderr().splitlines() if "counting on from" in line]
        print(f"\nkill -9 of the node agent mid-workload: ContainerTrace had {before[0]} "
              f"getppid at the kill; after the restart {after[0]} of {N} getppid "
              f"(lost: {N - after[0]}), {after[1]} of 2 execs; agent: "
              f"{resumed[0].split('WARNING ')[-1] if resumed else 'no resume line'}")
        assert after == (N, 2), show()
        assert resumed, second.stderr()
        if interval == "30s":  # the first exec was read by the killed agent, not reported
            assert before == (0, 0), before
            assert " 0 ring buffer bytes" not in resumed[0], resumed[0]
    finally:
        first.close()
        if second is not None:
            second.close()
        cp.kubectl("delete", "namespace", ns, "--wait=false")
        cp.kubectl("delete", "node", node, "--wait=false")
