"""A real containerd (with runc) in a temporary directory, and pods made the way kubelet makes them.

    with Containerd(sandbox_image=image.name) as cd:       # own config, root, state, socket
        import_image(image, cd.socket)
        with CRIClient(cd.endpoint) as cri:
            pods = PodRunner(cri, cd.workdir / "pods")
            pod = pods.run_pod("web-0", "shop")
            cid = pods.start_container(pod, "app", image.name, ["/bin/sleep", "600"])

The config is containerd's version 2 format with the CRI plugin set up for a node
without systemd and without CNI: the runc runtime with `SystemdCgroup = false`
(cgroupfs driver), pods on the host network (nothing needs CNI), and
`restrict_oom_score_adj = true`, without which runc cannot start a sandbox on a
machine that withholds CAP_SYS_RESOURCE from root ("can't get final child's PID
from pipe: EOF").

Containers keep running when containerd stops (their shims outlive it), which
is what `stop()`/`start()` are for: a runtime restart. `close()` removes what
was made: every pod sandbox and container (through CRI), containerd itself, the
`pod<uid>` cgroup directories runc leaves in every hierarchy (kubelet removes
them on a real node), the shims' sockets, and the temporary directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.procs import stop_process, tail
from podtrace_agent.cri import api_pb2
from podtrace_agent.cri.client import CRIClient
from podtrace_agent.cri.errors import CRIError, NotFound, Unimplemented
from podtrace_agent.fsretry import rmdir_retrying

CRI_NAMESPACE = "k8s.io"
QOS_PARENT = "/kubepods/besteffort"
# containerd 1.6 puts shim sockets here whatever its state dir is.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
_STOP_GRACE_S = 10.0


class StartupError(RuntimeError):
    """containerd did not answer on its socket; the message carries its log tail."""


def _config(
    workdir: Path,
    socket: Path,
    sandbox_image: str,
    disabled_plugins: Sequence[str] = (),
    cni_bin_dir: Path | None = None,
) -> str:
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    disabled = "".join(f'  "{p}",\n' for p in disabled_plugins)
    return f"""\
version = 2
root = "{workdir / "root"}"
state = "{workdir / "state"}"
# Snapshotters that cannot work here only add noise to the log.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
{disabled}]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir / "opt"}"

{cri}]
  sandbox_image = "{sandbox_image}"
  # runc cannot set oom_score_adj -998 for the sandbox without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  # No systemd on the test machines: the cgroupfs driver.
  SystemdCgroup = false
  Root = "{workdir / "runc"}"

{cri}.cni]
  # Without cni_bin_dir pods use the host network and bin/ stays empty.
  bin_dir = "{cni_bin_dir or workdir / "cni" / "bin"}"
  conf_dir = "{workdir / "cni" / "conf"}"
"""


def cgroup_mounts() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers and cgroup2)."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] in ("cgroup", "cgroup2"):
                mounts.append(Path(left.split(" ")[4]))
    return mounts


def shim_socket(address: Path, namespace: str, task_id: str) -> Path:
    """The shim socket containerd 1.6 derives for a task (runtime/v2/shim SocketAddress)."""
    digest = hashlib.sha256(str(Path(address) / namespace / task_id).encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


class Containerd:
    """One containerd process with its own config, root, state dir and socket."""

    def __init__(
        self,
        *,
        sandbox_image: str,
        workdir: Path | None = None,
        binary: str = "containerd",
        ready_timeout: float = 30.0,
        disabled_plugins: Sequence[str] = (),
        cni_bin_dir: Path | None = None,
        enter: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="podtrace-cd-"))
        self.socket = self.workdir / "containerd.sock"
        if len(os.fsencode(self.socket)) >= 108:  # sockaddr_un.sun_path, with its NUL
            raise ValueError(f"{self.socket}: too long for a unix socket; use a shorter workdir")
        self.config = self.workdir / "config.toml"
        self.log = self.workdir / "containerd.log"
        self.binary = binary
        self.sandbox_image = sandbox_image
        self.ready_timeout = ready_timeout
        # e.g. ("io.containerd.grpc.v1.cri",): containerd as Docker ships it, without CRI.
        self.disabled_plugins = tuple(disabled_plugins)
        # Real CNI plugins (Debian's containernetworking-plugins): pods get a network.
        self.cni_bin_dir = cni_bin_dir
        # How to run containerd in its node (nodens.NodeNamespace.enter); None: here.
        self.enter = enter or (lambda argv: argv)
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def cri_enabled(self) -> bool:
        return "io.containerd.grpc.v1.cri" not in self.disabled_plugins

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> float:
        """Start containerd and wait until CRI answers; returns the seconds it took."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            _config(
                self.workdir,
                self.socket,
                self.sandbox_image,
                self.disabled_plugins,
                self.cni_bin_dir,
            )
        )
        began = time.monotonic()
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                # setpriv: containerd gets SIGTERM when the thread that started it
                # ends (the test process, normally), without a preexec_fn (unsafe
                # once gRPC's threads run). Start it from a thread that lives as long.
                ["setpriv", "--pdeathsig", "TERM", "--",
                 *self.enter([self.binary, "--config", str(self.config)])],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        took = time.monotonic() - began
        key = "containerd restart" if "containerd start" in self.timings else "containerd start"
        self.timings[key] = took
        return took

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no socket yet"
        with CRIClient(self.endpoint, timeout=1.0) as cri:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise StartupError(
                        f"containerd exited with code {self._proc.returncode}:\n{tail(self.log)}"
                    )
                if self.socket.exists():
                    try:
                        cri.version()
                        return
                    except Unimplemented:
                        if not self.cri_enabled:
                            return  # gRPC serves; CRI is off on purpose
                        raise
                    except CRIError as exc:
                        last = str(exc)
                time.sleep(0.05)
        self.stop()
        raise StartupError(f"containerd not ready after {self.ready_timeout}s ({last}):\n"
                           f"{tail(self.log)}")  # fmt: skip

    def stop(self) -> None:
        """Stop containerd; containers keep running under their shims."""
        proc, self._proc = self._proc, None
        stop_process(proc, _STOP_GRACE_S)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def close(self) -> None:
        """Remove every pod, stop containerd, and clean up after it."""
        if not self.running and self.config.exists():
            with contextlib.suppress(StartupError):
                self.start()
        task_ids: list[str] = []
        pod_uids: list[str] = []
        if self.running and self.cri_enabled:
            with CRIClient(self.endpoint, timeout=30.0) as cri:
                task_ids, pod_uids = remove_all_pods(cri)
        self.stop()
        for task_id in task_ids:
            shim_socket(self.socket, CRI_NAMESPACE, task_id).unlink(missing_ok=True)
        for uid in pod_uids:
            remove_pod_cgroups(uid)
        _unmount_under(self.workdir)
        if os.environ.get("PODTRACE_KEEP_CONTAINERD_DIR"):
            print(f"kept {self.workdir}")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# What a fixture hands out to start another containerd (e.g. one a test may stop).
StartContainerd = Callable[..., Containerd]


def remove_all_pods(cri: CRIClient) -> tuple[list[str], list[str]]:
    """Stop and remove every container and sandbox; returns their IDs and the pod UIDs."""
    task_ids: list[str] = []
    uids: list[str] = []
    for container in cri.list_containers():
        task_ids.append(container.id)
        _quietly(cri, "StopContainer", api_pb2.StopContainerRequest(container_id=container.id))
        _quietly(cri, "RemoveContainer", api_pb2.RemoveContainerRequest(container_id=container.id))
    for sandbox in cri.list_pod_sandboxes():
        task_ids.append(sandbox.id)
        uids.append(sandbox.metadata.uid)
        request = {"pod_sandbox_id": sandbox.id}
        _quietly(cri, "StopPodSandbox", api_pb2.StopPodSandboxRequest(**request))
        _quietly(cri, "RemovePodSandbox", api_pb2.RemovePodSandboxRequest(**request))
    return task_ids, uids


def _quietly(cri: CRIClient, method: str, request: object) -> None:
    with contextlib.suppress(NotFound):
        cri.call(method, request)  # type: ignore[arg-type]


def _walk_deepest_first(top: Path) -> Iterator[Path]:
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        yield Path(dirpath)


def remove_pod_cgroups(uid: str, qos_parent: str = QOS_PARENT) -> None:
    """Remove the pod's cgroup directories in every hierarchy, deepest first, killing
    any process still in them (a container left behind by a crashed test)."""
    for mount in cgroup_mounts():
        pod_dir = mount / qos_parent.lstrip("/") / f"pod{uid}"
        if not pod_dir.is_dir():
            continue
        for d in _walk_deepest_first(pod_dir):
            with contextlib.suppress(OSError):  # best effort: one straggler must not stop teardown
                rmdir_retrying(d, timeout=5.0, interval=0.1, between=_kill_members)


def _kill_members(cgroup_dir: Path) -> None:
    try:
        pids = (cgroup_dir / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _unmount_under(top: Path) -> None:
    """Unmount anything left mounted under `top` (rootfs overlays, sandbox shm), deepest first."""
    prefix = str(top.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# --- pods the way kubelet makes them -------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    uid: str
    sandbox_id: str
    config: api_pb2.PodSandboxConfig

    @property
    def cgroup_parent(self) -> str:
        return self.config.linux.cgroup_parent


@dataclass
class PodRunner:
    """Runs pod sandboxes and containers through CRI with the metadata, labels,
    cgroup parent and namespaces kubelet (kuberuntime) passes, on the host network."""

    cri: CRIClient
    log_root: Path
    qos_parent: str = QOS_PARENT
    timings: dict[str, float] = field(default_factory=dict)

    def _timed(self, label: str, method: str, request: object) -> object:
        began = time.monotonic()
        reply = self.cri.call(method, request, timeout=60.0)  # type: ignore[arg-type]
        self.timings.setdefault(label, time.monotonic() - began)
        return reply

    @staticmethod
    def _namespaces() -> api_pb2.NamespaceOption:
        # kubelet's defaults for a hostNetwork pod: network NODE, pid per container, ipc per pod.
        return api_pb2.NamespaceOption(network=api_pb2.NODE, pid=api_pb2.CONTAINER, ipc=api_pb2.POD)

    def run_pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        uid: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Pod:
        uid = uid or str(uuid.uuid4())
        log_dir = self.log_root / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        config = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
            log_directory=str(log_dir),
            labels={
                **(labels or {}),
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid,
            },
            annotations={"kubernetes.io/config.source": "api"},
            linux=api_pb2.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.qos_parent}/pod{uid}",
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=self._namespaces()
                ),
            ),
        )
        reply = self._timed(
            "RunPodSandbox", "RunPodSandbox", api_pb2.RunPodSandboxRequest(config=config)
        )
        return Pod(name, namespace, uid, reply.pod_sandbox_id, config)  # type: ignore[attr-defined]

    def start_container(
        self,
        pod: Pod,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        labels: dict[str, str] | None = None,
    ) -> str:
        """Create and start a container; returns its ID."""
        # kubelet resolves the image to its ID first and passes both.
        status = self.cri.image_status(image)
        if status is None:
            raise RuntimeError(f"image {image} is not in containerd's k8s.io namespace")
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=status.id, user_specified_image=image),
            command=list(command),
            labels={
                **(labels or {}),
                "io.kubernetes.container.name": name,
                "io.kubernetes.pod.name": pod.name,
                "io.kubernetes.pod.namespace": pod.namespace,
                "io.kubernetes.pod.uid": pod.uid,
            },
            annotations={"io.kubernetes.container.restartCount": "0"},
            log_path=f"{name}/0.log",
            linux=api_pb2.LinuxContainerConfig(
                security_context=api_pb2.LinuxContainerSecurityContext(
                    namespace_options=self._namespaces()
                )
            ),
        )
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod.sandbox_id, config=config, sandbox_config=pod.config
        )
        container_id: str = self._timed("CreateContainer", "CreateContainer", request).container_id  # type: ignore[attr-defined]
        self._timed(
            "StartContainer",
            "StartContainer",
            api_pb2.StartContainerRequest(container_id=container_id),
        )
        return container_id

    def remove_pod(self, pod: Pod) -> None:
        """Stop and remove the pod's containers and sandbox, then its cgroups (as kubelet does)."""
        for c in self.cri.list_containers(api_pb2.ContainerFilter(pod_sandbox_id=pod.sandbox_id)):
            _quietly(self.cri, "StopContainer", api_pb2.StopContainerRequest(container_id=c.id))
            _quietly(self.cri, "RemoveContainer", api_pb2.RemoveContainerRequest(container_id=c.id))
        request = {"pod_sandbox_id": pod.sandbox_id}
        _quietly(self.cri, "StopPodSandbox", api_pb2.StopPodSandboxRequest(**request))
        _quietly(self.cri, "RemovePodSandbox", api_pb2.RemovePodSandboxRequest(**request))
        remove_pod_cgroups(pod.uid, self.qos_parent)
