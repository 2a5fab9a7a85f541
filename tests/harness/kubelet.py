"""A real kubelet (the locally built binary) as the one node of the local cluster.

    pki = make_kubelet_client_pki(state / "pki")     # apiserver -> kubelet client cert
    kubelet = Kubelet(binary, kubeconfig=..., root_dir=state / "kubelet",
                      runtime_endpoint=containerd.endpoint, client_ca=pki.ca_cert, ...)
    kubelet.start()

What the configuration (`kubelet_config`) decides, and why, on a node without
systemd, on a cgroup v1/v2 hybrid, where root lacks CAP_SYS_RESOURCE:

- `cgroupDriver: cgroupfs`, `cgroupsPerQOS: true`, `cgroupRoot: /`: pods land
  under /kubepods/<qos>/pod<uid>/<containerID> as on a real node (another
  `cgroupRoot` keeps a second kubelet on the same host out of the first one's
  way: each kills whatever it finds in its own kubepods that is not its pod);
  `failCgroupV1: false` (v1.32 still runs on cgroup v1 when told so).
- `oomScoreAdj: 0`: kubelet's default (-999) cannot be set without
  CAP_SYS_RESOURCE (kubelet only logs that, but there is no point in trying).
- `failSwapOn: false`; eviction thresholds near zero and image GC off
  (`imageGCHighThresholdPercent: 100`), so a full disk on a developer's machine
  neither evicts the test pods nor deletes the locally imported image (there is
  no registry to pull it back from).
- `makeIPTablesUtilChains: false`: no iptables chains on the host (there is no
  kube-proxy; the host may have no iptables at all).
- Everything kubelet writes goes under the state dir: `--root-dir`,
  `podLogsDir`, `volumePluginDir`, `resolvConf` (a copy of the host's). Two
  things kubelet does to the host regardless, which the cluster undoes on exit:
  it creates /var/log/containers (hard-coded) and, as kubelet always does unless
  `protectKernelDefaults` (which would make it refuse to start here instead),
  sets the sysctls in `KERNEL_TUNABLES` (`snapshot_sysctls`/`restore_sysctls`).
- Serving: on the node IP (kubelet refuses a loopback node IP) at a free port,
  no read-only port; authentication by client certificate only (anonymous off)
  against a CA of our own whose one client certificate the apiserver presents
  (`--kubelet-client-certificate`); authorization `AlwaysAllow` for whoever holds
  such a certificate. `kubectl logs/exec` thus work, and nobody else gets in.
- The kubelet's own API credential is the admin (system:masters) kubeconfig:
  the apiserver runs RBAC only, without the Node authorizer, so a
  `system:node:<name>` certificate would be allowed nothing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.apiserver import issue_certificate
from harness.procs import stop_process, tail

# kubelet's setupKernelTunables (pkg/kubelet/cm/container_manager_linux.go) sets these.
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Hard-coded in kubelet (pkg/kubelet/kubelet.go ContainerLogsDir): symlinks to the pod logs.
CONTAINER_LOGS_DIR = Path("/var/log/containers")
_STOP_GRACE_S = 15.0


class KubeletError(RuntimeError):
    """kubelet exited or did not bring the node up; the message carries its log tail."""


# --- client PKI: the apiserver's credential towards the kubelet ----------------------------


@dataclass(frozen=True)
class KubeletClientPki:
    ca_cert: Path  # the kubelet trusts client certificates signed by this CA
    client_cert: Path  # the apiserver's --kubelet-client-certificate
    client_key: Path


def _write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_kubelet_client_pki(directory: Path) -> KubeletClientPki:
    """A throwaway CA and one client certificate signed by it (P-256, valid for 2 days)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podtrace-kubelet-client-ca")])
    _, ca_key, ca = issue_certificate(ca_name, None, ca=True)
    _, _, client_pem = issue_certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client")]),
        (ca_name, ca_key),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    client = "apiserver-kubelet-client"
    return KubeletClientPki(
        ca_cert=_write_private(directory / "kubelet-client-ca.crt", ca.cert),
        client_cert=_write_private(directory / f"{client}.crt", client_pem.cert),
        client_key=_write_private(directory / f"{client}.key", client_pem.key),
    )


def apiserver_args(pki: KubeletClientPki) -> list[str]:
    """kube-apiserver flags to reach this kubelet (logs, exec, port-forward)."""
    return [
        # The node's Hostname address is its name, which nothing resolves.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki.client_cert}",
        f"--kubelet-client-key={pki.client_key}",
    ]


# --- host facts -----------------------------------------------------------------------------


def node_ip() -> str:
    """The address of the interface that holds the default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("203.0.113.1", 9))  # TEST-NET-3 goes the default route; UDP sends nothing
        except OSError as exc:
            raise KubeletError(
                "no default route: kubelet needs a non-loopback node IP (it refuses 127.0.0.1)"
            ) from exc
        ip = str(sock.getsockname()[0])
    if ip.startswith("127.") or ip == "0.0.0.0":
        raise KubeletError(f"the default route's source address {ip} is not usable as node IP")
    return ip


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def snapshot_sysctls() -> dict[str, str]:
    values = {}
    for name in KERNEL_TUNABLES:
        try:
            values[name] = (Path("/proc/sys") / name).read_text().strip()
        except OSError:
            continue
    return values


def restore_sysctls(values: dict[str, str]) -> list[str]:
    """Write back what `snapshot_sysctls` saw; returns the names that could not be restored."""
    failed = []
    for name, value in values.items():
        path = Path("/proc/sys") / name
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
        except OSError:
            failed.append(name)
    return failed


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeletPaths:
    root_dir: Path  # --root-dir: pods/, pki/ (serving cert), plugins, checkpoints
    config: Path
    log: Path
    pod_logs: Path
    volume_plugins: Path
    resolv_conf: Path

    @classmethod
    def under(cls, directory: Path) -> KubeletPaths:
        return cls(
            root_dir=directory / "root",
            config=directory / "config.json",
            log=directory / "kubelet.log",
            pod_logs=directory / "pod-logs",
            volume_plugins=directory / "volume-plugins",
            resolv_conf=directory / "resolv.conf",
        )


def kubelet_config(
    paths: KubeletPaths,
    *,
    runtime_endpoint: str,
    address: str,
    port: int,
    healthz_port: int,
    client_ca: Path,
    cgroup_root: str = "/",
    minor: int = 32,
) -> dict[str, object]:
    """The KubeletConfiguration (kubelet.config.k8s.io/v1beta1) for a kubelet v1.<minor>;
    see the module docstring."""
    config: dict[str, object] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": runtime_endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "cgroupRoot": cgroup_root,
        "enforceNodeAllocatable": ["pods"],
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.volume_plugins),
        "resolvConf": str(paths.resolv_conf),
        "clusterDomain": "cluster.local",
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # Ready shows up within seconds rather than at the 10 s default.
        "nodeStatusUpdateFrequency": "2s",
        "serializeImagePulls": False,
        "registerNode": True,
    }
    if minor < 31:  # failCgroupV1 came with v1.31; before, cgroup v1 was simply supported
        del config["failCgroupV1"]
    return config


def kubelet_minor(binary: Path, default: int = 32) -> int:
    """The minor version of a kubelet binary ("Kubernetes v1.32.13" -> 32); `default`
    for a build without version stamps ("v0.0.0-master+$Format:%H$")."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    match = re.search(r"v1\.(\d+)\.", out)
    return int(match.group(1)) if match else default


def _host_resolv_conf() -> str:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


# --- the process ----------------------------------------------------------------------------


class Kubelet:
    """One kubelet process; its state under `directory` (see KubeletPaths)."""

    def __init__(
        self,
        binary: Path,
        *,
        directory: Path,
        kubeconfig: Path,
        runtime_endpoint: str,
        node_name: str,
        client_ca: Path,
        cgroup_root: str = "/",
        verbosity: int = 2,
        enter: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.binary = binary
        # How to run the kubelet in its node (nodens.NodeNamespace.enter); None: here.
        self.enter = enter or (lambda argv: argv)
        self.paths = KubeletPaths.under(directory)
        self.kubeconfig = kubeconfig
        self.runtime_endpoint = runtime_endpoint
        self.node_name = node_name
        self.client_ca = client_ca
        self.cgroup_root = cgroup_root
        self.verbosity = verbosity
        self.node_ip = node_ip()
        self.port = free_port(self.node_ip)
        self.healthz_port = free_port("127.0.0.1")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            f"--config={self.paths.config}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.paths.root_dir}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={self.node_ip}",
            f"--v={self.verbosity}",
        ]

    def write_config(self) -> None:
        for d in (self.paths.root_dir, self.paths.pod_logs, self.paths.volume_plugins):
            d.mkdir(parents=True, exist_ok=True)
        self.paths.resolv_conf.write_text(_host_resolv_conf())
        config = kubelet_config(
            self.paths,
            runtime_endpoint=self.runtime_endpoint,
            address=self.node_ip,
            port=self.port,
            healthz_port=self.healthz_port,
            client_ca=self.client_ca,
            cgroup_root=self.cgroup_root,
            minor=kubelet_minor(self.binary),
        )
        self.paths.config.write_text(json.dumps(config, indent=2) + "\n")

    def start(self) -> None:
        self.write_config()
        with self.paths.log.open("ab") as out:
            self._proc = subprocess.Popen(
                # setpriv: the kubelet dies with whoever started it (no preexec_fn, which is
                # unsafe once threads run).
                ["setpriv", "--pdeathsig", "TERM", "--", *self.enter(self.argv())],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise KubeletError(
                f"kubelet exited with code {self._proc.returncode}:\n{self.log_tail()}"
            )

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.healthz_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: kubelet exits and leaves its pods running (they are removed through CRI)."""
        proc, self._proc = self._proc, None
        stop_process(proc, _STOP_GRACE_S)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.paths.log, lines)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def remove_container_log_links(into: Path) -> None:
    """Remove /var/log/containers symlinks that point under `into` (kubelet's pod logs)."""
    if not CONTAINER_LOGS_DIR.is_dir():
        return
    prefix = str(into.resolve()) + os.sep
    for link in CONTAINER_LOGS_DIR.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(prefix):
            link.unlink(missing_ok=True)
