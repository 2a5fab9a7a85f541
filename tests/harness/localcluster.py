"""A single-node Kubernetes cluster on this host, without Docker: etcd + kube-apiserver
(harness.apiserver), a real containerd with the locally built busybox image imported
(harness.containerd, harness.oci_image) and a real kubelet registered as the Node
(harness.kubelet).

In tests (a pytest fixture; see tests/cluster/test_localcluster.py):

    with LocalCluster() as cluster:                  # state in a temp dir
        cluster.kubectl("apply", "-f", "-", input=json.dumps(cluster.pod_manifest(...)))

Detached, for `make demo` (scripts/cluster-up, scripts/cluster-down):

    python -m harness.localcluster up   [--state-dir /var/lib/podtrace-demo]
    python -m harness.localcluster down [--state-dir /var/lib/podtrace-demo]
    python -m harness.localcluster status

`up` starts a supervisor process in its own session that owns every part of the
cluster (they die with it), prints its progress, and returns once the Node is
Ready; `<state>/env` then holds KUBECONFIG and the rest as shell assignments.
`down` asks the supervisor to tear everything down and then sweeps whatever a
crash may have left (processes, mounts, pod cgroups, sysctls): it leaves nothing.

What the cluster is, and is not:
- Pods are scheduled by setting `spec.nodeName` (no scheduler) and run with
  `hostNetwork: true`; there is no pod network. The node carries a CNI config
  only so containerd reports NetworkReady and the Node turns Ready; a pod
  without hostNetwork fails to get a sandbox with "failed to find plugin".
- No controller-manager. The two of its jobs pods need are done here by a small
  thread (`_NamespaceBootstrap`): every namespace gets its `default`
  ServiceAccount and the `kube-root-ca.crt` ConfigMap, so pods keep the default
  `automountServiceAccountToken` and their token volume mounts. The
  `node.kubernetes.io/not-ready` taint the node is registered with is removed
  once it is Ready (the node lifecycle controller's job). Deleted namespaces stay
  Terminating and owned objects are not garbage-collected.
- The image `localhost/podtrace-test/busybox:1` is also the sandbox image;
  pods use it with `imagePullPolicy: Never` (there is no registry).
- While the kubelet runs it owns /kubepods: it kills the processes of any
  `pod<uid>` cgroup there that is not one of its pods (orphan cleanup), so no
  other test tier may run pods under /kubepods at the same time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.apiserver import LocalAPIServer
from harness.containerd import Containerd, cgroup_mounts
from harness.controlplane import ControlPlane
from harness.k8s_binaries import K8sBinaries, PrerequisiteMissing, ensure_binaries
from harness.kubelet import (
    CONTAINER_LOGS_DIR,
    Kubelet,
    KubeletError,
    apiserver_args,
    make_kubelet_client_pki,
    node_ip,
    remove_container_log_links,
    restore_sysctls,
    snapshot_sysctls,
)
from harness.nodens import NodeNamespace
from harness.oci_image import BUSYBOX, DEFAULT_NAME, build_busybox_image, import_image
from podtrace_agent.fsretry import rmdir_retrying

DEMO_STATE_DIR = Path("/var/lib/podtrace-demo")
DEFAULT_NODE_NAME = "podtrace-node"
RECORD = "cluster.json"
READY_MARK = "ready"
LOG = "cluster.log"
ENV_FILE = "env"
KUBECONFIG = "kubeconfig"
QOS_DIRS = ("kubepods/besteffort", "kubepods/burstable", "kubepods")  # deepest first
CNI_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
POD_BRIDGE_PREFIX = "podtrace"  # node i's pod bridge is podtrace<i>, its subnet 10.244.<i>.0/24
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_TOOLS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "setpriv", "umount")

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster did not come up; the message says which part and carries its log tail."""


def _stderr_progress(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def missing_prerequisites(
    binaries: K8sBinaries | None = None, *, in_cluster: bool = False
) -> list[str]:
    """What this host lacks for a local cluster (empty when everything is there)."""
    problems = []
    if in_cluster and not (CNI_PLUGINS / "bridge").is_file():
        problems.append(
            f"CNI plugins in {CNI_PLUGINS} (apt-get install containernetworking-plugins)"
        )
    if os.geteuid() != 0:
        problems.append("root (kubelet, containerd and cgroups need it)")
    for tool in _TOOLS:
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` (apt-get install containerd runc util-linux mount)")
    if not BUSYBOX.is_file():
        problems.append(f"{BUSYBOX} (apt-get install busybox-static)")
    if not cgroup_mounts():
        problems.append("a mounted cgroup hierarchy")
    if binaries is not None and binaries.kubelet is None:
        problems.append(
            "the kubelet binary (it did not build: run `make binaries` and read the build log)"
        )
    return problems


# --- small API client (admin client certificate from the kubeconfig) -------------------------


class _Api:
    def __init__(self, kubeconfig: Path, pki_dir: Path) -> None:
        config = json.loads(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"]
        pki_dir.mkdir(parents=True, exist_ok=True)
        cert, key = pki_dir / "admin.crt", pki_dir / "admin.key"
        for path, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
            path.write_bytes(base64.b64decode(user[field]))
            path.chmod(0o600)
        self.ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self._ctx = ssl.create_default_context(cadata=self.ca_pem)
        self._ctx.load_cert_chain(cert, key)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            content_type = "application/json"
            if method == "PATCH":
                content_type = "application/json-patch+json"
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            with err:
                raw = err.read()
            try:
                return err.code, json.loads(raw)
            except ValueError:
                return err.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise ClusterError(f"GET {path}: HTTP {status}: {body}")
        return body


class _NamespaceBootstrap:
    """What controller-manager does for a new namespace that pods need: the `default`
    ServiceAccount and the `kube-root-ca.crt` ConfigMap. Polls (cheap on loopback)."""

    def __init__(self, api: _Api, interval: float = 0.3) -> None:
        self.api = api
        self.interval = interval
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def ensure(self, namespace: str) -> bool:
        objects = [
            (
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
            ),
            (
                f"/api/v1/namespaces/{namespace}/configmaps",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "kube-root-ca.crt"},
                    "data": {"ca.crt": self.api.ca_pem},
                },
            ),
        ]
        for path, body in objects:
            status, answer = self.api.request("POST", path, body)
            if status not in (201, 409):  # 409: exists already
                self.errors.append(f"POST {path}: {status} {answer}")
                return False
        return True

    def sync(self) -> None:
        namespaces = self.api.get("/api/v1/namespaces")["items"]
        for ns in namespaces:
            name = ns["metadata"]["name"]
            if name in self._done or ns.get("status", {}).get("phase") != "Active":
                continue
            if self.ensure(name):
                self._done.add(name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, ClusterError, ValueError):
                self.sync()

    def start(self) -> None:
        self.sync()
        self._thread = threading.Thread(target=self._run, name="ns-bootstrap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


# --- host cleanup shared by stop() and sweep() -----------------------------------------------


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4].replace("\\040", " ") for line in f]


def unmount_under(*tops: Path) -> list[str]:
    """Unmount everything mounted at or below `tops`, deepest first; returns what was."""
    prefixes = [str(t.resolve()) for t in tops if t.exists()]
    found = [
        p for p in _mount_points() if any(p == pre or p.startswith(pre + "/") for pre in prefixes)
    ]
    for point in sorted(set(found), key=len, reverse=True):
        done = subprocess.run(["umount", point], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return found


def _kill_cgroup_members(cgroup_dir: Path) -> None:
    for d in _walk_deepest_first(cgroup_dir):
        try:
            pids = (d / "cgroup.procs").read_text().split()
        except OSError:
            continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _walk_deepest_first(top: Path) -> Iterator[Path]:
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        yield Path(dirpath)


def pod_cgroup_dirs(uid: str, cgroup_root: str = "/") -> list[Path]:
    """The pod's cgroup directories in every hierarchy and QoS class that exist now."""
    found = []
    for mount in cgroup_mounts():
        for qos in QOS_DIRS:
            d = mount / cgroup_root.strip("/") / qos / f"pod{uid}"
            if d.is_dir():
                found.append(d)
    return found


def remove_pod_cgroups(uids: Sequence[str], cgroup_root: str = "/") -> list[Path]:
    """Remove the pods' cgroup dirs (deepest first, killing stragglers); returns what it found."""
    found = [d for uid in uids for d in pod_cgroup_dirs(uid, cgroup_root)]
    for pod_dir in found:
        for d in _walk_deepest_first(pod_dir):
            with contextlib.suppress(OSError):  # best effort: left for the next sweep
                rmdir_retrying(d, timeout=5.0, interval=0.1, between=_kill_cgroup_members)
    return found


def remove_empty_qos_cgroups(cgroup_root: str = "/") -> None:
    """kubelet's kubepods/{besteffort,burstable} and kubepods (and a cgroup root of our own),
    where nothing is left in them."""
    root = cgroup_root.strip("/")
    dirs = [f"{root}/{qos}" if root else qos for qos in QOS_DIRS] + ([root] if root else [])
    for mount in cgroup_mounts():
        for rel in dirs:
            d = mount / rel
            if d.is_dir() and not any(p.is_dir() for p in d.iterdir()):
                with contextlib.suppress(OSError):
                    d.rmdir()


def _kubelet_scanned_mounts() -> list[Path]:
    """The hierarchies kubelet scans for orphaned pods: the v1 ones where there are any
    (on a hybrid host it never looks into cgroup2), else cgroup2."""
    v1, v2 = [], []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split(" ", 1)[0]
            if fstype == "cgroup":
                v1.append(Path(left.split(" ")[4]))
            elif fstype == "cgroup2":
                v2.append(Path(left.split(" ")[4]))
    return v1 or v2


def foreign_pods(cgroup_root: str = "/") -> list[Path]:
    """Pod cgroups under this kubepods that have processes in them now. The kubelet would
    kill them as orphans, so a cluster refuses to start next to them."""
    busy = []
    for mount in _kubelet_scanned_mounts():
        for qos in QOS_DIRS:
            parent = mount / cgroup_root.strip("/") / qos
            if not parent.is_dir():
                continue
            for pod_dir in parent.glob("pod*"):
                procs = [
                    (d / "cgroup.procs").read_text().strip()
                    for d in _walk_deepest_first(pod_dir)
                    if (d / "cgroup.procs").is_file()
                ]
                if any(procs):
                    busy.append(pod_dir)
    return busy


def mount_bpffs() -> None:
    """A bpffs at /sys/fs/bpf, as systemd mounts one on a real node: the agents pin
    their BPF maps there (hostPath), so that a restarted agent loses no count."""
    from podtrace_agent.bpf.pins import PinError, ensure_bpffs

    try:
        ensure_bpffs(allow_mount=True)
    except PinError as err:
        _stderr_progress(f"no bpffs, the agents will not pin: {err.strerror}")


def remove_pins(node_name: str) -> list[str]:
    """The BPF pins a node's agent left (README: Reliability), removed."""
    from podtrace_agent.bpf.pins import PIN_ROOT, instance_name, remove_tree

    directory = PIN_ROOT / instance_name(node_name)
    if not directory.exists():
        return []
    remove_tree(directory)
    return [str(directory)]


def make_cgroup_root(cgroup_root: str) -> None:
    """kubelet insists that its cgroupRoot exists in every hierarchy; a new cpuset
    cgroup gets its parent's CPUs and memory nodes, or no task could join it."""
    root = cgroup_root.strip("/")
    if not root:
        return
    for mount in cgroup_mounts():
        d = mount / root
        d.mkdir(parents=True, exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            own = d / name
            if own.exists() and not own.read_text().strip():
                own.write_text((d.parent / name).read_text())


def _processes_mentioning(needles: Sequence[str]) -> list[int]:
    """PIDs whose command line contains one of `needles` (paths unique to one cluster)."""
    needles = [n for n in needles if n]
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            pids.append(int(entry.name))
    return pids


def _terminate(pids: Sequence[int], grace: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kubelet_pod_uids(kubelet_root: Path) -> list[str]:
    pods = kubelet_root / "pods"
    return sorted(p.name for p in pods.iterdir()) if pods.is_dir() else []


# --- the cluster -----------------------------------------------------------------------------


@dataclass
class ClusterNode:
    """One node: its own containerd (root, state, socket), kubelet (root dir, ports, node
    name) and cgroup root, and its own pod bridge and subnet."""

    name: str
    index: int  # 0-based
    cgroup_root: str
    containerd_dir: Path
    kubelet_dir: Path
    containerd: Containerd | None = None
    kubelet: Kubelet | None = None
    # Its own cgroup namespace rooted at cgroup_root (--cgroupns, as a kind node); None:
    # the host's namespace, pods under cgroup_root (the kubelet's cgroupRoot).
    namespace: NodeNamespace | None = None

    @property
    def bridge(self) -> str:
        return f"{POD_BRIDGE_PREFIX}{self.index}"

    @property
    def subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def kubepods(self) -> str:
        """The node's kubepods cgroup (relative to each hierarchy's root), e.g. /kubepods."""
        return "/" + "/".join(p for p in (self.cgroup_root.strip("/"), "kubepods") if p)

    @property
    def seccomp_dir(self) -> Path:
        """The node kubelet's seccomp directory (<root dir>/seccomp), where `localhostProfile`
        names are looked up."""
        return self.kubelet_dir / "root" / "seccomp"

    def record(self) -> dict[str, Any]:
        return {"node_name": self.name, "cgroup_root": self.cgroup_root,
                "containerd_dir": str(self.containerd_dir), "kubelet_dir": str(self.kubelet_dir),
                "bridge": self.bridge, "cgroupns": self.namespace is not None}  # fmt: skip

    def stop_namespace(self) -> None:
        """After its kubelet and containerd: the node's namespaces go with their holder."""
        if self.namespace is not None:
            self.namespace.stop()
            self.namespace = None


def node_specs(
    base_name: str, count: int, cgroup_root: str = "/", cgroupns: bool = False
) -> list[tuple[str, str]]:
    """(node name, cgroup root) of each node: one node keeps `base_name` and `cgroup_root`;
    several are `<base>-1..N`, each under a cgroup root of its own name (as kind's nodes
    live under their containers' cgroups), so no kubelet sees another's pods.

    >>> node_specs("n", 1)
    [('n', '/')]
    >>> node_specs("n", 2)
    [('n-1', '/n-1'), ('n-2', '/n-2')]
    >>> node_specs("n", 1, cgroupns=True)  # a namespace is rooted at a node cgroup
    [('n', '/n')]
    """
    parent = cgroup_root.rstrip("/")
    if count == 1:
        return [(base_name, f"{parent}/{base_name}" if cgroupns else cgroup_root)]
    return [(f"{base_name}-{i}", f"{parent}/{base_name}-{i}") for i in range(1, count + 1)]


class LocalCluster:
    """etcd + kube-apiserver + containerd + kubelet per node, all torn down on exit.

    `state_dir`: where containerd, the kubelet and the record live. None: a fresh
    temporary directory, removed on stop; a given directory is removed on stop too
    unless `keep_state` (the detached supervisor keeps its log for `down`).
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        node_name: str = DEFAULT_NODE_NAME,
        image_name: str = DEFAULT_NAME,
        progress: Progress | None = None,
        ready_timeout: float = 120.0,
        keep_state: bool = False,
        binaries: K8sBinaries | None = None,
        cgroup_root: str = "/",
        in_cluster: bool = False,
        nodes: int = 1,
        extra_apiserver_args: Sequence[str] = (),
        cgroupns: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="podtrace-cluster-"))
        # Each node in a cgroup namespace of its own, rooted at its cgroup root, with the
        # cgroup filesystems mounted inside (nodens.py), as a kind node.
        self.cgroupns = cgroupns
        # Never remove a directory that held something else before we came.
        self._owns_state_dir = not self.state_dir.exists() or not any(self.state_dir.iterdir())
        specs = node_specs(node_name, nodes, cgroup_root, cgroupns)
        self.nodes = [
            ClusterNode(name, i, root,
                        self.state_dir / ("containerd" if i == 0 else f"containerd-{i + 1}"),
                        self.state_dir / ("kubelet" if i == 0 else f"kubelet-{i + 1}"))
            for i, (name, root) in enumerate(specs)
        ]  # fmt: skip
        self.node_name = self.nodes[0].name  # the first node, for single-node callers
        self.image_name = image_name
        self.progress = progress or _stderr_progress
        self.ready_timeout = ready_timeout
        self.keep_state = keep_state
        self.binaries = binaries
        self.cgroup_root = self.nodes[0].cgroup_root
        self.extra_apiserver_args = list(extra_apiserver_args)  # e.g. an audit log's flags
        # What an in-cluster install needs beyond bare pods: kube-scheduler and
        # kube-controller-manager (Deployments, DaemonSets), a pod network (bridge CNI),
        # and an apiserver that pods on that network can reach at the node's IP. Several
        # nodes need the scheduler as well.
        self.in_cluster = in_cluster or nodes > 1
        self.controlplane: ControlPlane | None = None
        self.kubeconfig = self.state_dir / KUBECONFIG
        self.apiserver: LocalAPIServer | None = None
        self.containerd: Containerd | None = None
        self.kubelet: Kubelet | None = None
        self.timings: dict[str, float] = {}
        self.startup_seconds: float | None = None
        self._api: _Api | None = None
        self._bootstrap: _NamespaceBootstrap | None = None
        self._record: dict[str, Any] = {}
        self._began = 0.0

    # -- lifecycle --

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _say(self, message: str) -> None:
        self.progress(f"+{time.monotonic() - self._began:5.1f}s {message}")

    def _step(self, name: str, began: float) -> None:
        self.timings[name] = time.monotonic() - began

    def _save_record(self, **fields: Any) -> None:
        self._record.update(fields)
        path = self.state_dir / RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._record, indent=2) + "\n")
        tmp.replace(path)

    def start(self) -> None:
        self._began = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._save_record(
            state_dir=str(self.state_dir),
            node_name=self.node_name,
            image=self.image_name,
            supervisor_pid=os.getpid(),
            kubeconfig=str(self.kubeconfig),
            containerd_dir=str(self.nodes[0].containerd_dir),
            kubelet_dir=str(self.nodes[0].kubelet_dir),
            cgroup_root=self.cgroup_root,
            in_cluster=self.in_cluster,
            cgroupns=self.cgroupns,
            nodes=[node.record() for node in self.nodes],
        )
        binaries = self.binaries or ensure_binaries()
        problems = missing_prerequisites(binaries, in_cluster=self.in_cluster)
        if problems:
            raise PrerequisiteMissing("local cluster needs: " + "; ".join(problems))
        assert binaries.kubelet is not None
        for node in self.nodes:
            busy = sorted({p.name for p in foreign_pods(node.cgroup_root)})
            if busy:
                raise ClusterError(
                    f"processes of pods this kubelet would not know run under {node.kubepods}: "
                    f"{', '.join(busy)} (another containerd's, e.g. a concurrent test run's); "
                    "the kubelet kills such orphans, so the cluster does not start next to them"
                )

        t = time.monotonic()
        self._say(f"building the busybox image {self.image_name}")
        image = build_busybox_image(self.state_dir / "image", self.image_name)
        self._step("image build", t)

        t = time.monotonic()
        pki = make_kubelet_client_pki(self.state_dir / "pki")
        self._say("starting etcd + kube-apiserver")
        network = {"bind_address": "0.0.0.0", "serving_ips": [node_ip()]} if self.in_cluster else {}
        self.apiserver = LocalAPIServer(
            binaries, extra_apiserver_args=[*apiserver_args(pki), *self.extra_apiserver_args],
            **network
        )
        # Their temporary dirs, for a sweep after a crash (etcd's is not public).
        dirs = [self.apiserver.workdir, getattr(self.apiserver, "etcd_dir", None)]
        self._save_record(apiserver_dirs=[str(d) for d in dirs if d is not None])
        self.apiserver.start()
        shutil.copyfile(self.apiserver.kubeconfig, self.kubeconfig)
        self.kubeconfig.chmod(0o600)
        self._api = _Api(self.kubeconfig, self.state_dir / "pki")
        self._step("apiserver", t)
        self._say(
            f"kube-apiserver ready at {self.apiserver.url} ({self.timings['apiserver']:.1f}s)"
        )
        if self.in_cluster:
            t = time.monotonic()
            self.controlplane = ControlPlane(binaries, self.apiserver)
            self.controlplane.start()
            self._step("scheduler + controller-manager", t)
            self._say("kube-scheduler and kube-controller-manager healthy "
                      f"({self.timings['scheduler + controller-manager']:.1f}s)")  # fmt: skip

        self._save_record(
            sysctls=snapshot_sysctls(),
            created_container_logs_dir=not CONTAINER_LOGS_DIR.exists(),
        )
        for node in self.nodes:
            self._start_node(node, image, binaries, pki.ca_cert)
        self.containerd, self.kubelet = self.nodes[0].containerd, self.nodes[0].kubelet
        t = time.monotonic()
        for node in self.nodes:
            self._wait_node_ready(node)
            self._untaint_not_ready(node.name)
            self._say(f"node {node.name} Ready ({time.monotonic() - t:.1f}s)")
        self._step("nodes ready", t)

        self._bootstrap = _NamespaceBootstrap(self._api)
        self._bootstrap.start()
        self.startup_seconds = time.monotonic() - self._began
        self._save_record(
            server=self.apiserver.url,
            runtime_endpoint=self.containerd.endpoint,
            node_ip=self.kubelet.node_ip if self.kubelet else None,
            kubelet_port=self.kubelet.port if self.kubelet else None,
            startup_seconds=round(self.startup_seconds, 1),
            timings={k: round(v, 2) for k, v in self.timings.items()},
        )
        self._write_env_file()
        self._say(f"cluster up in {self.startup_seconds:.1f}s")

    def _start_node(
        self, node: ClusterNode, image: Any, binaries: K8sBinaries, client_ca: Path
    ) -> None:
        """containerd (with the busybox image) and a kubelet registering `node`."""
        assert binaries.kubelet is not None
        t = time.monotonic()
        enter = None
        if self.cgroupns:
            mount_bpffs()  # before: the node's mount namespace starts as a copy of ours
            node.namespace = NodeNamespace(node.cgroup_root)
            node.namespace.start(make_cgroup_root)
            enter = node.namespace.enter
        node.containerd = Containerd(
            sandbox_image=image.name,
            workdir=node.containerd_dir,
            cni_bin_dir=CNI_PLUGINS if self.in_cluster else None,
            enter=enter,
        )
        self._write_cni_config(node)
        node.containerd.start()
        import_image(image, node.containerd.socket)
        if self.in_cluster:
            self._publish_cri_socket(node)
        self._step(f"{node.name}: containerd + image", t)
        make_cgroup_root(node.cgroup_root)
        mount_bpffs()
        self._link_seccomp_dir(node)
        node.kubelet = Kubelet(
            binaries.kubelet,
            directory=node.kubelet_dir,
            kubeconfig=self.kubeconfig,
            runtime_endpoint=node.containerd.endpoint,
            node_name=node.name,
            client_ca=client_ca,
            # In its namespace the node cgroup is the root.
            cgroup_root="/" if node.namespace is not None else node.cgroup_root,
            enter=enter,
        )
        where = "in its own cgroup namespace rooted at" if enter else "cgroup root"
        self._say(f"starting containerd and kubelet of node {node.name} "
                  f"({where} {node.cgroup_root})")  # fmt: skip
        node.kubelet.start()

    @property
    def seccomp_dirs(self) -> Path:
        """<dir>/<node name> is each node's kubelet seccomp directory (its <root dir>/seccomp
        links there), so one DaemonSet mounts every node's with --seccomp-dir=...$(NODE_NAME):
        on a real cluster each node has its own /var/lib/kubelet/seccomp."""
        return self.state_dir / "seccomp"

    def _link_seccomp_dir(self, node: ClusterNode) -> None:
        target = self.seccomp_dirs / node.name
        target.mkdir(parents=True, exist_ok=True)
        node.seccomp_dir.parent.mkdir(parents=True, exist_ok=True)
        if node.seccomp_dir.is_symlink():
            return
        if node.seccomp_dir.exists():  # a state dir of an older harness: start it over
            shutil.rmtree(node.seccomp_dir)
        node.seccomp_dir.symlink_to(target)

    @property
    def cri_socket_dir(self) -> Path:
        """<dir>/<node name>/containerd.sock is each node's CRI socket (bind mounts), so one
        DaemonSet reaches every node's runtime with --runtime-endpoint=...$(NODE_NAME)...:
        on a real cluster each node has its own /run/containerd."""
        return self.state_dir / "cri"

    def _publish_cri_socket(self, node: ClusterNode) -> None:
        assert node.containerd is not None
        target = self.cri_socket_dir / node.name / "containerd.sock"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
        bind = ["mount", "--bind", str(node.containerd.socket), str(target)]
        # Where the node's pods (their hostPath) see it: in the node's mount namespace.
        subprocess.run(node.namespace.enter(bind) if node.namespace else bind, check=True)

    def _write_cni_config(self, node: ClusterNode) -> None:
        # containerd reports NetworkReady (and so the kubelet the Node Ready) only with a
        # CNI network configured. Without in_cluster, pods use the host network, which
        # never calls CNI, and a pod that does not fails with "failed to find plugin" (no
        # plugin binaries). With it, Debian's bridge and host-local plugins give pods a
        # network on a bridge whose host side routes to the node's IP; IPAM state stays
        # in our state dir.
        containerd_dir = node.containerd_dir
        conf_dir = containerd_dir / "cni" / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-podtrace-hostnetwork-only.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "podtrace-pods" if self.in_cluster else "podtrace-hostnetwork-only",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": node.bridge,
                            "isGateway": True,
                            "ipMasq": False,  # no traffic leaves the node; no iptables rules
                            "ipam": {
                                "type": "host-local",
                                "subnet": node.subnet,
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(containerd_dir / "cni" / "ipam"),
                            },
                        }
                    ],
                },
                indent=2,
            )
        )

    def _node(self, name: str) -> dict[str, Any] | None:
        assert self._api is not None
        status, body = self._api.request("GET", f"/api/v1/nodes/{name}")
        return body if status == 200 else None

    @staticmethod
    def _condition(node: dict[str, Any], kind: str) -> dict[str, Any]:
        for cond in node.get("status", {}).get("conditions", []):
            if cond.get("type") == kind:
                return dict(cond)
        return {}

    def _wait_node_ready(self, cluster_node: ClusterNode) -> None:
        kubelet = cluster_node.kubelet
        assert kubelet is not None
        deadline = time.monotonic() + self.ready_timeout
        registered = False
        node: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            try:
                kubelet.check_alive()
            except KubeletError as exc:
                raise ClusterError(str(exc)) from None
            node = self._node(cluster_node.name)
            if node is not None and not registered:
                registered = True
                self._say(f"node {cluster_node.name} registered, waiting for Ready")
            if node is not None and self._condition(node, "Ready").get("status") == "True":
                return
            time.sleep(0.25)
        ready = self._condition(node, "Ready") if node else "node never registered"
        raise ClusterError(
            f"node {cluster_node.name} not Ready after {self.ready_timeout:.0f}s: {ready}\n"
            f"--- kubelet log (tail) ---\n{kubelet.log_tail()}"
        )

    def _untaint_not_ready(self, name: str) -> None:
        assert self._api is not None
        node = self._node(name) or {}
        taints = node.get("spec", {}).get("taints", [])
        for index in reversed(range(len(taints))):
            if taints[index].get("key") == NOT_READY_TAINT:
                patch = [
                    {"op": "test", "path": f"/spec/taints/{index}/key", "value": NOT_READY_TAINT},
                    {"op": "remove", "path": f"/spec/taints/{index}"},
                ]
                self._api.request("PATCH", f"/api/v1/nodes/{name}", patch)

    def _write_env_file(self) -> None:
        assert self.containerd is not None
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "PODTRACE_NODE_NAME": self.node_name,
            "PODTRACE_CRI_ENDPOINT": self.containerd.endpoint,
            "PODTRACE_TEST_IMAGE": self.image_name,
            "PODTRACE_KUBECTL": str(self.apiserver.binaries.kubectl if self.apiserver else ""),
            "PODTRACE_CLUSTER_STATE": str(self.state_dir),
            "PODTRACE_SECCOMP_DIR": str(self.seccomp_dir),
            "PODTRACE_NODE_NAMES": " ".join(node.name for node in self.nodes),
        }
        lines = [f"{k}={_shell_quote(v)}" for k, v in env.items()]
        (self.state_dir / ENV_FILE).write_text(
            "# written by harness.localcluster; `source` it or `export $(grep -v ^# ...)`\n"
            + "\n".join(f"export {line}" for line in lines)
            + "\n"
        )

    def stop(self) -> None:
        """Tear everything down, leaving no process, mount, cgroup or file behind."""
        began = time.monotonic()
        if self._bootstrap is not None:
            self._bootstrap.stop()
            self._bootstrap = None
        if self.controlplane is not None:
            # First: ReplicaSets and DaemonSets would recreate the pods deleted below.
            self.controlplane.stop()
            self.controlplane = None
        uids: set[str] = set(self._record.get("pod_uids", []))
        running = [n for n in self.nodes if n.kubelet is not None and n.kubelet.running]
        if running and self._api is not None:
            uids |= self._delete_all_pods()
        had_kubelet = any(n.kubelet is not None for n in self.nodes)
        for node in self.nodes:
            if node.kubelet is not None:
                uids |= set(_kubelet_pod_uids(node.kubelet.paths.root_dir))
                node.kubelet.stop()
            if node.containerd is not None:
                # Every remaining sandbox and container through CRI, then containerd itself,
                # its shims' sockets, the besteffort pod cgroups, its mounts and directory.
                node.containerd.close()
                node.containerd = None
            node.stop_namespace()
        self.containerd = None
        if self.apiserver is not None:
            self.apiserver.stop()
            self.apiserver = None
        cleanup_host(self._record, sorted(uids))
        if not self.keep_state and self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if had_kubelet or self.startup_seconds is not None:
            self.progress(f"cluster torn down in {time.monotonic() - began:.1f}s")
        for node in self.nodes:
            node.kubelet = None
        self.kubelet = None

    def stop_node(self, name: str) -> None:
        """Stop one node whole, as a machine that goes away: its kubelet, then its
        containerd (with its containers). The Node object stays until deleted."""
        node = next(n for n in self.nodes if n.name == name)
        if node.kubelet is not None:
            node.kubelet.stop()
        if node.containerd is not None:
            node.containerd.close()
            node.containerd = None
        node.stop_namespace()

    def _delete_all_pods(self, timeout: float = 60.0) -> set[str]:
        """Delete every pod and let the kubelet stop them (containers, volumes, cgroups)."""
        assert self._api is not None
        try:
            pods = self._api.get("/api/v1/pods")["items"]
        except (OSError, ClusterError):
            return set()
        uids = {p["metadata"]["uid"] for p in pods}
        self._save_record(pod_uids=sorted(uids | set(self._record.get("pod_uids", []))))
        for pod in pods:
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 1}
            self._api.request("DELETE", path, options)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ClusterError):
                if not self._api.get("/api/v1/pods")["items"]:
                    break
            time.sleep(0.25)
        return uids

    # -- use --

    @property
    def kubepods(self) -> str:
        """The kubepods cgroup path (relative to each hierarchy's root), e.g. /kubepods."""
        return "/" + "/".join(p for p in (self.cgroup_root.strip("/"), "kubepods") if p)

    @property
    def seccomp_dir(self) -> Path:
        """Where `localhost/<name>` seccomp profiles are looked up: <kubelet root>/seccomp."""
        return self.nodes[0].seccomp_dir

    @property
    def image(self) -> str:
        return self.image_name

    @property
    def runtime_endpoint(self) -> str:
        assert self.containerd is not None, "cluster not started"
        return self.containerd.endpoint

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        assert self.apiserver is not None, "cluster not started"
        return self.apiserver.kubectl(*args, input=input, check=check, timeout=timeout)

    def get_json(self, path: str) -> Any:
        assert self._api is not None, "cluster not started"
        return self._api.get(path)

    def ensure_namespace(self, namespace: str) -> None:
        """Create `namespace` with its default ServiceAccount and kube-root-ca.crt now."""
        assert self._api is not None and self._bootstrap is not None, "cluster not started"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        status, answer = self._api.request("POST", "/api/v1/namespaces", body)
        if status not in (201, 409):
            raise ClusterError(f"create namespace {namespace}: {status} {answer}")
        if not self._bootstrap.ensure(namespace):
            raise ClusterError("; ".join(self._bootstrap.errors[-2:]))

    def pod_manifest(
        self,
        name: str,
        command: Sequence[str],
        *,
        namespace: str = "default",
        labels: dict[str, str] | None = None,
        container_name: str = "main",
        restart_policy: str = "Never",
        grace_seconds: int = 1,
        extra_spec: dict[str, Any] | None = None,
        node: str | None = None,
    ) -> dict[str, Any]:
        """A Pod bound to `node` (default: the first; no scheduler needed) on the host
        network with the local image."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {
                "nodeName": node or self.node_name,
                "hostNetwork": True,
                "restartPolicy": restart_policy,
                "terminationGracePeriodSeconds": grace_seconds,
                "containers": [
                    {
                        "name": container_name,
                        "image": self.image_name,
                        "imagePullPolicy": "Never",
                        "command": list(command),
                    }
                ],
                **(extra_spec or {}),
            },
        }

    def wait_pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        phase: str = "Running",
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until the pod is in `phase`; returns the pod. Raises with its status if not."""
        assert self._api is not None, "cluster not started"
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        deadline = time.monotonic() + timeout
        pod: Any = None
        while time.monotonic() < deadline:
            status, pod = self._api.request("GET", path)
            if status == 200 and pod.get("status", {}).get("phase") == phase:
                return dict(pod)
            time.sleep(0.2)
        raise ClusterError(
            f"pod {namespace}/{name} not {phase} after {timeout:.0f}s: "
            f"{json.dumps(pod.get('status') if isinstance(pod, dict) else pod)}"
        )


def node_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each node's part of a cluster record (older records: the one node's top-level keys)."""
    state_dir = Path(record.get("state_dir", "/nonexistent"))
    return list(record.get("nodes") or [{
        "node_name": record.get("node_name", DEFAULT_NODE_NAME),
        "cgroup_root": record.get("cgroup_root", "/"),
        "containerd_dir": record.get("containerd_dir", str(state_dir / "containerd")),
        "kubelet_dir": record.get("kubelet_dir", str(state_dir / "kubelet")),
        "bridge": f"{POD_BRIDGE_PREFIX}0",
    }])  # fmt: skip


def cleanup_host(record: dict[str, Any], uids: Sequence[str] = ()) -> dict[str, Any]:
    """Undo what the cluster did to the host, from its record; safe to repeat.
    Returns what it found (for `down`'s report: all empty after a clean stop)."""
    state_dir = Path(record.get("state_dir", "/nonexistent"))
    nodes = node_records(record)
    apiserver_dirs = [Path(d) for d in record.get("apiserver_dirs", [])]
    all_uids = set(uids) | set(record.get("pod_uids", []))
    for node in nodes:
        all_uids |= set(_kubelet_pod_uids(Path(node["kubelet_dir"]) / "root"))
    found: dict[str, Any] = {"pod_cgroups": [], "pod_bridges": [], "bpf_pins": []}
    found["mounts"] = unmount_under(state_dir, *apiserver_dirs)
    for node in nodes:
        found["bpf_pins"] += remove_pins(node["node_name"])
        cgroup_root = node["cgroup_root"]
        removed = remove_pod_cgroups(sorted(all_uids), cgroup_root)
        found["pod_cgroups"] += [str(d) for d in removed]
        remove_empty_qos_cgroups(cgroup_root)
        if record.get("in_cluster") and _remove_link(node["bridge"]):
            found["pod_bridges"].append(node["bridge"])
    if record.get("sysctls"):
        found["sysctls_not_restored"] = restore_sysctls(record["sysctls"])
    remove_container_log_links(state_dir)
    if record.get("created_container_logs_dir") and CONTAINER_LOGS_DIR.is_dir():
        with contextlib.suppress(OSError):
            CONTAINER_LOGS_DIR.rmdir()  # only if empty: other writers keep it
    for d in apiserver_dirs:
        shutil.rmtree(d, ignore_errors=True)
    return found


def _remove_link(name: str) -> bool:
    """Delete the pod bridge the CNI plugin made; True when there was one."""
    if not Path(f"/sys/class/net/{name}").exists():
        return False
    subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
    return True


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


# --- crash recovery --------------------------------------------------------------------------


def read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((state_dir / RECORD).read_text()))
    except (OSError, ValueError):
        return None


def _supervisor_alive(record: dict[str, Any]) -> int | None:
    pid = record.get("supervisor_pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if "harness.localcluster" in cmdline and record["state_dir"] in cmdline else None


def sweep(state_dir: Path, progress: Progress = _stderr_progress) -> dict[str, Any]:
    """Remove whatever a cluster under `state_dir` left behind, whether it stopped cleanly
    or crashed: its processes (by their state paths), containers (through CRI, after
    restarting its containerd), mounts, pod cgroups, sysctls, and the state dir."""
    record = read_record(state_dir)
    if record is None:
        # Not (or no longer) a cluster's state dir: remove it only when empty.
        with contextlib.suppress(OSError):
            state_dir.rmdir()
        return {}
    nodes = node_records(record)
    needles = [
        *(n["kubelet_dir"] for n in nodes),
        *(n["containerd_dir"] for n in nodes),
        *record.get("apiserver_dirs", []),
    ]
    uids = [u for n in nodes for u in _kubelet_pod_uids(Path(n["kubelet_dir"]) / "root")]
    strays = [p for p in _processes_mentioning(needles) if _is_not_shim(p)]
    if strays:
        progress(f"stopping {len(strays)} leftover cluster processes")
        _terminate(strays)
    for node in nodes:
        containerd_dir = Path(node["containerd_dir"])
        if (containerd_dir / "config.toml").exists():
            # Restarting our containerd finds the containers whose shims outlived it and
            # removes them through CRI, as a clean stop would have.
            progress(f"removing leftover pods of {node['node_name']} through CRI")
            try:
                Containerd(
                    sandbox_image=record.get("image", DEFAULT_NAME), workdir=containerd_dir,
                    # the pods' networks are torn down by the plugins that set them up
                    cni_bin_dir=CNI_PLUGINS if record.get("in_cluster") else None,
                ).close()
            except Exception as err:  # the shims and cgroups are swept below all the same
                progress(f"pods of {node['node_name']} not removed through CRI: {err}")
    shims = _processes_mentioning(needles)
    if shims:
        progress(f"stopping {len(shims)} leftover shim processes")
        _terminate(shims)
    found = cleanup_host(record, uids)
    shutil.rmtree(state_dir, ignore_errors=True)
    found["processes"] = strays + shims
    return found


def _is_not_shim(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return True
    return "containerd-shim" not in exe


# --- pytest ----------------------------------------------------------------------------------


def wait_for_quiet_kubepods(cgroup_root: str, timeout: float) -> list[Path]:
    """Wait up to `timeout` s for foreign pods under this kubepods to go (e.g. a concurrent
    runtime-tier run finishing); returns the pod cgroups still busy."""
    deadline = time.monotonic() + timeout
    busy = foreign_pods(cgroup_root)
    while busy and time.monotonic() < deadline:
        time.sleep(1.0)
        busy = foreign_pods(cgroup_root)
    return busy


def cluster_for_tests(
    *, in_cluster: bool = False, nodes: int = 1, extra_apiserver_args: Sequence[str] = (),
    cgroupns: bool = False,
) -> Iterator[LocalCluster]:
    """Body of a pytest fixture: skip (fail under PODTRACE_REQUIRE_ALL=1) when the host
    lacks what the cluster needs, else yield a started cluster and tear it down after.

        @pytest.fixture(scope="module")
        def local_cluster() -> Iterator[LocalCluster]:
            yield from cluster_for_tests()

    Not session scope: while the kubelet runs it kills the runtime tier's pods under
    /kubepods, and that tier runs later in the same session (a package scope ends with
    the directory only where it has an __init__.py). Bring-up takes about 8 s.

    PODTRACE_CLUSTER_CGROUP_ROOT (default /) moves the kubelet's kubepods elsewhere, so
    a developer can run this tier next to another one that runs pods under /kubepods.
    """
    from harness import prereq

    try:
        binaries = ensure_binaries()
    except PrerequisiteMissing as exc:
        prereq.missing(str(exc))
    problems = missing_prerequisites(binaries, in_cluster=in_cluster or nodes > 1)
    if problems:
        prereq.missing("local cluster needs: " + "; ".join(problems))
    cgroup_root = os.environ.get("PODTRACE_CLUSTER_CGROUP_ROOT", "/")
    wait_for_quiet_kubepods(cgroup_root, timeout=180.0)
    in_cluster = in_cluster or nodes > 1
    if in_cluster and None in (binaries.kube_scheduler, binaries.kube_controller_manager):
        prereq.missing(
            "kube-scheduler and kube-controller-manager did not build: run `make binaries` "
            "and read their build logs in ~/.cache/podtrace"
        )
    with LocalCluster(
        binaries=binaries, cgroup_root=cgroup_root, in_cluster=in_cluster, nodes=nodes,
        extra_apiserver_args=extra_apiserver_args, cgroupns=cgroupns,
    ) as cluster:
        yield cluster


# --- detached use: up / down / status --------------------------------------------------------


def _follow(log: Path, offset: int) -> int:
    """Print what was appended to `log` since `offset`; returns the new offset."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return offset
    if chunk:
        sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()
    return offset + len(chunk)


def _print_summary(state_dir: Path) -> None:
    record = read_record(state_dir) or {}
    print(
        f"cluster up: node {record.get('node_name')} Ready, "
        f"apiserver {record.get('server')}\n"
        f"  kubeconfig:   {record.get('kubeconfig')}\n"
        f"  CRI endpoint: {record.get('runtime_endpoint')}\n"
        f"  image:        {record.get('image')} (imagePullPolicy: Never)\n"
        f"  environment:  source {state_dir / ENV_FILE}\n"
        f"  bring-up:     {record.get('startup_seconds')}s"
    )


def cmd_up(
    state_dir: Path, node_name: str, timeout: float, cgroup_root: str = "/", nodes: int = 1,
    cgroupns: bool = False,
) -> int:
    began = time.monotonic()
    record = read_record(state_dir)
    if record is not None and _supervisor_alive(record):
        if (state_dir / READY_MARK).exists():
            print(f"cluster already up (state {state_dir})")
            _print_summary(state_dir)
            return 0
        print(
            f"a cluster under {state_dir} is starting or stopping; run down first", file=sys.stderr
        )
        return 1
    if state_dir.exists() and any(state_dir.iterdir()):
        if record is None:
            print(f"{state_dir} is not empty and holds no cluster record: not using it",
                  file=sys.stderr)  # fmt: skip
            return 2
        _stderr_progress(f"cleaning up what a previous cluster left in {state_dir}")
        sweep(state_dir)
    try:
        _stderr_progress("checking the Kubernetes binaries (the first build takes many minutes)")
        binaries = ensure_binaries()
    except PrerequisiteMissing as exc:
        print(f"prerequisite missing: {exc}", file=sys.stderr)
        return 2
    problems = missing_prerequisites(binaries)
    if problems:
        print("prerequisite missing: " + "; ".join(problems), file=sys.stderr)
        return 2
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / LOG
    tests_dir = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
    }
    with log.open("ab") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "harness.localcluster", "serve",
             "--state-dir", str(state_dir), "--node-name", node_name,
             "--cgroup-root", cgroup_root, "--nodes", str(nodes),
             *(["--cgroupns"] if cgroupns else [])],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this shell; `down` stops it
            env=env,
        )  # fmt: skip
    offset = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        offset = _follow(log, offset)
        if (state_dir / READY_MARK).exists():
            _follow(log, offset)
            _print_summary(state_dir)
            print(f"  (up in {time.monotonic() - began:.1f}s; tear down: scripts/cluster-down)")
            return 0
        if supervisor.poll() is not None:
            _follow(log, offset)
            print(f"cluster failed to come up (supervisor exit {supervisor.returncode})",
                  file=sys.stderr)  # fmt: skip
            sweep(state_dir)
            return 1
        time.sleep(0.2)
    print(f"cluster not up after {timeout:.0f}s; tearing down", file=sys.stderr)
    cmd_down(state_dir)
    return 1


def cmd_down(state_dir: Path, timeout: float = 180.0) -> int:
    began = time.monotonic()
    record = read_record(state_dir)
    if record is None and not state_dir.exists():
        print(f"no cluster under {state_dir}: nothing to tear down")
        return 0
    log = state_dir / LOG
    offset = log.stat().st_size if log.exists() else 0
    pid = _supervisor_alive(record) if record else None
    if pid is not None:
        _stderr_progress(f"stopping the cluster (supervisor pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            offset = _follow(log, offset)
            time.sleep(0.2)
        _follow(log, offset)
        if _alive(pid):
            _stderr_progress("supervisor did not stop in time: killing it, sweeping")
            os.kill(pid, signal.SIGKILL)
    found = sweep(state_dir)
    leftovers = {k: v for k, v in found.items() if v}
    if leftovers:
        _stderr_progress(f"swept leftovers: {json.dumps(leftovers)}")
    print(f"cluster down in {time.monotonic() - began:.1f}s; {state_dir} removed")
    return 0


def cmd_status(state_dir: Path) -> int:
    record = read_record(state_dir)
    if record is None:
        print(f"no cluster under {state_dir}")
        return 1
    alive = _supervisor_alive(record) is not None
    ready = (state_dir / READY_MARK).exists()
    print(json.dumps({**record, "supervisor_alive": alive, "ready": ready}, indent=2))
    return 0 if alive and ready else 1


class _Shutdown(BaseException):
    pass


def cmd_serve(
    state_dir: Path, node_name: str, cgroup_root: str = "/", nodes: int = 1,
    cgroupns: bool = False,
) -> int:
    """The supervisor: own the cluster until SIGTERM/SIGINT/SIGHUP, then tear it down."""
    stop = threading.Event()
    started = False

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if not started:
            raise _Shutdown(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def progress(message: str) -> None:
        print(f"[cluster] {message}", flush=True)

    cluster = LocalCluster(
        state_dir,
        node_name=node_name,
        progress=progress,
        keep_state=True,
        cgroup_root=cgroup_root,
        nodes=nodes,
        cgroupns=cgroupns,
    )
    try:
        cluster.start()
        started = True
        (state_dir / READY_MARK).write_text(f"{os.getpid()}\n")
        while not stop.wait(5.0):
            for node in cluster.nodes:
                for part, proc_ok in (
                    ("kubelet", node.kubelet is not None and node.kubelet.running),
                    ("containerd", node.containerd is not None and node.containerd.running),
                ):
                    if not proc_ok:
                        progress(f"warning: {node.name}'s {part} is not running any more")
    except _Shutdown as exc:
        progress(f"{exc} during bring-up: tearing down")
    except Exception as exc:
        progress(f"bring-up failed: {exc}")
        cluster.stop()
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        (state_dir / READY_MARK).unlink(missing_ok=True)
    progress("tearing down")
    cluster.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.localcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--state-dir", type=Path, default=DEMO_STATE_DIR)
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    parser.add_argument("--timeout", type=float, default=600.0, help="bring-up limit (s)")
    parser.add_argument(
        "--cgroup-root",
        default="/",
        help="kubelet's cgroupRoot (default /: pods under /kubepods as on a real node)",
    )
    parser.add_argument(
        "--nodes", type=int, default=1,
        help="nodes, each with its own containerd, kubelet and cgroup root <root>/<node>; "
             "more than one adds kube-scheduler and kube-controller-manager",
    )  # fmt: skip
    parser.add_argument(
        "--cgroupns", action="store_true",
        help="each node in a cgroup namespace of its own rooted at its cgroup root, with the "
             "cgroup filesystems mounted inside, as a kind node (harness/nodens.py)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "up":
        return cmd_up(state_dir, args.node_name, args.timeout, args.cgroup_root, args.nodes,
                      args.cgroupns)  # fmt: skip
    if args.command == "down":
        return cmd_down(state_dir)
    if args.command == "status":
        return cmd_status(state_dir)
    return cmd_serve(state_dir, args.node_name, args.cgroup_root, args.nodes, args.cgroupns)


if __name__ == "__main__":
    sys.exit(main())
