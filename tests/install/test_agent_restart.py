"""Issue 11 part 1 as installed: the agent pod's process is killed with `kill -9`
while a traced pod execs; kubelet restarts the container, the new agent resumes
the pinned maps in the host's bpffs, and the ContainerTrace's exec counts are
exactly the workload's. Then uninstall leaves nothing (no pins, no programs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from harness import install_checks
from harness.install_checks import API, NS, Installation, condition, workload_execs

ROUNDS = 300
# Absolute paths: busybox sh runs bare applet names in-process, without an execve.
WORKLOAD = (f"i=0; while [ $i -lt {ROUNDS} ]; do /bin/true; /bin/sleep 0.02; i=$((i+1)); "
            "done; echo worked; exec /bin/sleep 3600")
EXECS = {"/bin/busybox": 1, "/bin/true": ROUNDS, "/bin/sleep": ROUNDS + 1}


def agent_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "podtrace-agent run"], capture_output=True,
                           text=True)
    return [int(p) for p in found.stdout.split()]


def test_kill_9_of_the_agent_loses_no_exec(installed: Installation) -> None:
    inst = installed
    inst.run("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
    inst.wait_for(f"namespace {NS}'s ServiceAccount",
                  lambda: inst.maybe("serviceaccount", "default", NS))
    inst.run("apply", "-f", "-", input=json.dumps({
        "apiVersion": API, "kind": "ContainerTrace", "metadata": {"name": "rec", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "loop"}}}}))
    inst.wait_for("the ContainerTrace Valid", lambda: condition(
        (inst.maybe("containertrace", "rec", NS) or {}).get("status") or {}, "Valid"
    ).get("status") == "True")
    inst.run("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        # web-1: the name the uninstall check deletes
        "metadata": {"name": "web-1", "namespace": NS, "labels": {"app": "loop"}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": inst.workload_image,
                                 "imagePullPolicy": "Never",
                                 "command": ["/bin/busybox", "sh", "-c", WORKLOAD]}]}}))

    def execs() -> dict[str, int]:
        status = (inst.maybe("containertrace", "rec", NS) or {}).get("status") or {}
        return workload_execs(status.get("execs") or [])

    inst.wait_for("the loop's first execs counted", lambda: execs().get("/bin/true", 0) > 20)
    (pid,) = agent_pids()
    at_kill = execs()
    os.kill(pid, signal.SIGKILL)
    inst.wait_for("the agent restarted by kubelet", lambda: [
        p for p in inst.pods("app.kubernetes.io/name=podtrace-agent")
        if (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 1
        and (p["status"]["containerStatuses"][0].get("state") or {}).get("running")])
    def exact() -> dict[str, int] | None:
        got = execs()
        return got if got == EXECS else None

    final = inst.wait_for("the loop's exact execs", exact, timeout=180, show=execs)
    logs = inst.kubectl("logs", "-n", install_checks.NAMESPACE, "daemonset/podtrace-agent",
                        check=False)
    resumed = [line for line in logs.splitlines() if "counting on from" in line]
    print(f"\nkill -9 of the agent pod's process with /bin/true at {at_kill.get('/bin/true')} "
          f"of {ROUNDS}: after kubelet restarted it, {final} (lost: "
          f"{sum(EXECS.values()) - sum(final.values())}); agent: "
          f"{resumed[0].split('WARNING ')[-1] if resumed else 'no resume line'}")
    assert final == EXECS
    install_checks.check_uninstall_leaves_nothing(inst)
