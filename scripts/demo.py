"""`make demo` / `make demo-down`: podtrace on a real cluster in one command.

    up    bring up a cluster (kind from kind-config.yaml where Docker and kind work;
          otherwise the local single-node cluster: etcd, kube-apiserver, containerd and
          a real kubelet), install the CRDs, start the operator and the agent, run the
          demo workload, apply the example policies and a ContainerTrace, wait, and
          print `kubectl get tp,ct,nt`, the Events and the generated seccomp profile.
    down  tear all of it down: no process, mount or cgroup is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.install_overlay import write_overlay  # noqa: E402
from harness.kubelet import node_ip  # noqa: E402
from harness.oci_image import DEFAULT_NAME, build_busybox_image, import_archive  # noqa: E402
from harness.podtrace_image import build_image  # noqa: E402
from harness.podtrace_procs import Podtrace, install_crds, stop_detached  # noqa: E402

STATE = Path(os.environ.get("PODTRACE_CLUSTER_STATE", "/var/lib/podtrace-demo"))
WORK = STATE.parent / (STATE.name + "-podtrace")  # outside the cluster's state dir
DEMO = REPO / "manifests" / "demo"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def kind_usable() -> bool:
    """kind needs a working Docker engine, not just its client."""
    if not (shutil.which("kind") and shutil.which("docker")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


class Kubectl:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.base = [kubectl, f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = subprocess.run([*self.base, *args], input=input, capture_output=True, text=True)
        if check and done.returncode:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json"))


def wait_for(what: str, check, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(1)
    print(f"    {what}: ok", flush=True)


def up_local() -> tuple[Kubectl, dict[str, str]]:
    say("bringing up the local single-node cluster (etcd, kube-apiserver, containerd, kubelet)")
    subprocess.run([str(REPO / "scripts" / "cluster-up")], check=True)
    env = read_env(STATE / "env")
    kubectl = Kubectl(env["PODTRACE_KUBECTL"], env["KUBECONFIG"])
    say("installing the CRDs")
    install_crds(env["PODTRACE_KUBECTL"], Path(env["KUBECONFIG"]))
    say("starting podtrace-operator and podtrace-agent (host processes)")
    procs = Podtrace(Path(env["KUBECONFIG"]), node=env["PODTRACE_NODE_NAME"],
                     cri_endpoint=env["PODTRACE_CRI_ENDPOINT"], workdir=WORK,
                     status_interval="2s", metrics_port=9465,
                     seccomp_dir=Path(env["PODTRACE_SECCOMP_DIR"]))
    procs.start(detached=True)
    procs.wait_agent_ready(env["PODTRACE_KUBECTL"])
    print(f"    logs: {procs.operator_log}, {procs.agent_log}; "
          f"events as JSON lines: {procs.agent_events}; metrics: http://127.0.0.1:9465/metrics")
    return kubectl, env


def up_installed(nodes: int) -> tuple[Kubectl, dict[str, str]]:
    """A local cluster of `nodes` nodes with podtrace installed in it as a user installs it:
    the image in every node's containerd, `kubectl apply -k` (through the overlay for what
    the local cluster lacks), one agent pod per node."""
    say(f"bringing up the local cluster with {nodes} nodes (each its own containerd, "
        "kubelet and cgroup root; kube-scheduler, kube-controller-manager)")
    subprocess.run([str(REPO / "scripts" / "cluster-up"), "--nodes", str(nodes)], check=True)
    env = read_env(STATE / "env")
    record = json.loads((STATE / "cluster.json").read_text())
    kubectl = Kubectl(env["PODTRACE_KUBECTL"], env["KUBECONFIG"])
    say("building the podtrace image (make image) and importing it into every node")
    image = build_image(lambda m: print(f"    {m}", flush=True))
    for node in record["nodes"]:
        import_archive(image.tar, Path(node["containerd_dir"]) / "containerd.sock")
    overlay = write_overlay(WORK / "overlay", node_ip(), urlsplit(record["server"]).port or 443,
                            STATE / "cri", STATE / "seccomp")
    say(f"installing podtrace: kubectl apply -k {overlay} (manifests/ + the local overlay)")
    print(kubectl("apply", "-k", str(overlay)), end="")
    wait_for(f"podtrace-agent DaemonSet ready on {nodes} nodes", lambda: kubectl.json(
        "get", "daemonset", "podtrace-agent", "-n", "podtrace-system"
    ).get("status", {}).get("numberReady", 0) == nodes, timeout=300)
    wait_for("every NodeTracer Ready", lambda: all(
        any(c["type"] == "Ready" and c["status"] == "True"
            for c in (nt.get("status") or {}).get("conditions") or [])
        for nt in kubectl.json("get", "nt")["items"]
    ) and len(kubectl.json("get", "nt")["items"]) == nodes, timeout=300)
    return kubectl, env


def run_demo(kubectl: Kubectl, node: str | None) -> None:
    say("running the demo workload (namespace demo, pod web: loops, spawns a shell once)")
    kubectl("apply", "-f", str(DEMO / "namespace.yaml"))
    wait_for("namespace demo's ServiceAccount",
             lambda: kubectl("get", "sa", "default", "-n", "demo", check=False) != "")
    pod = yaml.safe_load((DEMO / "workload.yaml").read_text())
    if node:  # the local cluster has no scheduler
        pod["spec"]["nodeName"] = node
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    say("applying manifests/examples/ and the demo ContainerTrace")
    print(kubectl("apply", "-f", str(REPO / "manifests" / "examples")), end="")
    print(kubectl("apply", "-f", str(DEMO / "containertrace.yaml")), end="")
    wait_for("pod demo/web Running", lambda: kubectl.json("get", "pod", "web", "-n", "demo")
             .get("status", {}).get("phase") == "Running")

    def traced() -> bool:
        status = kubectl.json("get", "ct", "web-record", "-n", "demo").get("status") or {}
        return status.get("phase") == "Tracing" and status.get("execsTotal", 0) >= 8

    wait_for("ContainerTrace demo/web-record tracing", traced)

    def shell_event() -> bool:
        events = kubectl.json("get", "events.events.k8s.io", "-n", "demo")["items"]
        return any(e.get("reason") == "ShellInContainer" for e in events)

    wait_for("Warning ShellInContainer on pod demo/web", shell_event)
    time.sleep(3)  # one more status round, so the numbers below are fresh

    say("kubectl get tp,ct,nt -A")
    print(kubectl("get", "tp,ct,nt", "-A"), end="")
    say("kubectl get events -n demo")
    print(kubectl("get", "events", "-n", "demo", "--sort-by=.lastTimestamp"), end="")
    say("what the web container ran (ContainerTrace status.execs)")
    status = kubectl.json("get", "ct", "web-record", "-n", "demo")["status"]
    for record in status.get("execs", []):
        print(f"    {record['count']:>4}  {record['filename']}")
    top = status.get("syscalls", {})
    print(f"    syscalls: {top.get('total')} calls, {top.get('distinct')} distinct; top: " +
          ", ".join(f"{s['name']}={s['count']}" for s in top.get("top", [])[:8]))
    say("the generated seccomp profile (ConfigMap demo/web-record-seccomp)")
    configmap = kubectl.json("get", "configmap", "web-record-seccomp", "-n", "demo")
    for key, text in configmap.get("data", {}).items():
        print(f"--- {key}\n{text}")

    def installed() -> dict | None:
        status = kubectl.json("get", "ct", "web-record", "-n", "demo").get("status") or {}
        done = [c for c in status.get("conditions") or []
                if c["type"] == "ProfileInstalled" and c["status"] == "True"]
        return done[0] if done else None

    say("the profile installed on the nodes (seccompProfile.install: true)")
    wait_for("condition ProfileInstalled", installed)
    print(f"    {(installed() or {}).get('message')}")
    say("done: explore with the kubeconfig above; `make demo-down` tears it all down")


def up(args: argparse.Namespace) -> int:
    if args.nodes > 1:
        kubectl, env = up_installed(args.nodes)
        run_demo(kubectl, node=None)  # placed by the scheduler
        print(f"\nexport KUBECONFIG={env['KUBECONFIG']}  # kubectl: {env['PODTRACE_KUBECTL']}")
        return 0
    if kind_usable():
        say("Docker and kind found: using kind (kind-config.yaml)")
        subprocess.run(["kind", "create", "cluster", "--name", "podtrace",
                        "--config", str(REPO / "kind-config.yaml")], check=True)
        say("building the podtrace image (make image) and the demo's busybox image")
        image = build_image(lambda m: print(f"    {m}", flush=True))
        busybox = build_busybox_image(WORK / "busybox", DEFAULT_NAME)
        for load in (["docker-image", image.name], ["image-archive", str(busybox.tar)]):
            subprocess.run(["kind", "load", *load, "--name", "podtrace"], check=True)
        kubeconfig = str(Path.home() / ".kube" / "config")
        kubectl = Kubectl(shutil.which("kubectl") or "kubectl", kubeconfig)
        say("installing podtrace: kubectl apply -k manifests/ (CRDs, operator, agent)")
        kubectl("apply", "-k", str(REPO / "manifests"))
        kubectl("wait", "--for=condition=Established", "--timeout=60s",
                "crd/tracingpolicies.podtrace.io", "crd/containertraces.podtrace.io")
        wait_for("podtrace-agent DaemonSet ready", lambda: kubectl.json(
            "get", "daemonset", "podtrace-agent", "-n", "podtrace-system"
        ).get("status", {}).get("numberReady", 0) >= 1, timeout=300)
        run_demo(kubectl, node=None)
        return 0
    print("demo: no usable Docker engine + kind here: using the local single-node cluster",
          flush=True)
    kubectl, env = up_local()
    run_demo(kubectl, node=env["PODTRACE_NODE_NAME"])
    print(f"\nexport KUBECONFIG={env['KUBECONFIG']}  # kubectl: {env['PODTRACE_KUBECTL']}")
    return 0


def down(_: argparse.Namespace) -> int:
    if kind_usable() and "podtrace" in subprocess.run(
            ["kind", "get", "clusters"], capture_output=True, text=True).stdout.split():
        subprocess.run(["kind", "delete", "cluster", "--name", "podtrace"], check=True)
    say("stopping podtrace-operator and podtrace-agent")
    stop_detached(WORK)
    shutil.rmtree(WORK, ignore_errors=True)
    say("tearing down the local cluster")
    return subprocess.run([str(REPO / "scripts" / "cluster-down")]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    up_parser = verbs.add_parser("up")
    up_parser.add_argument("--nodes", type=int, default=1,
                           help="more than one: a local cluster of that many nodes with "
                                "podtrace installed in it (image, kubectl apply -k)")
    up_parser.set_defaults(run=up)
    verbs.add_parser("down").set_defaults(run=down)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
