"""kube-scheduler and kube-controller-manager beside harness.apiserver's kube-apiserver:
what Deployments and DaemonSets need (pods placed by the real scheduler, ReplicaSets,
DaemonSet pods, ServiceAccount tokens' namespaces, garbage collection).

Both run with the admin kubeconfig on loopback ports of their own, without leader
election (one of each). The controller-manager signs nothing; it needs the
ServiceAccount key only to create the `default` ServiceAccount's token controller
state, and the CA for each namespace's `kube-root-ca.crt`.

    with ControlPlane(binaries, apiserver) as cp: ...
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.apiserver import LocalAPIServer, free_port
from harness.k8s_binaries import K8sBinaries, PrerequisiteMissing
from harness.procs import stop_process, tail

_STOP_GRACE_S = 10.0


class ControlPlaneError(RuntimeError):
    """A component exited or never answered; the message carries its log tail."""


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # --pdeathsig: if the test process is killed outright, the component dies too.
        return subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "--", *argv],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


class ControlPlane:
    def __init__(self, binaries: K8sBinaries, apiserver: LocalAPIServer) -> None:
        if binaries.kube_scheduler is None or binaries.kube_controller_manager is None:
            raise PrerequisiteMissing(
                "kube-scheduler and kube-controller-manager did not build "
                "(run `make binaries` and read their build logs in ~/.cache/podtrace)"
            )
        self.binaries = binaries
        self.apiserver = apiserver
        self.scheduler_log = apiserver.workdir / "kube-scheduler.log"
        self.controller_manager_log = apiserver.workdir / "kube-controller-manager.log"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

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

    def start(self, timeout: float = 60.0) -> None:
        kubeconfig = str(self.apiserver.kubeconfig)
        workdir = self.apiserver.workdir
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--v=1",
        ]
        ports = {"kube-scheduler": free_port(), "kube-controller-manager": free_port()}
        assert self.binaries.kube_scheduler and self.binaries.kube_controller_manager
        self._procs["kube-scheduler"] = _spawn(
            [str(self.binaries.kube_scheduler), *common,
             f"--secure-port={ports['kube-scheduler']}"],
            self.scheduler_log,
        )  # fmt: skip
        self._procs["kube-controller-manager"] = _spawn(
            [
                str(self.binaries.kube_controller_manager), *common,
                f"--secure-port={ports['kube-controller-manager']}",
                f"--service-account-private-key-file={workdir / 'sa.key'}",
                f"--root-ca-file={workdir / 'ca.crt'}",
                "--use-service-account-credentials=false",
                # No cloud, no node IPAM: pods use the node's CNI config as it is.
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            ],
            self.controller_manager_log,
        )  # fmt: skip
        self._wait_healthy(ports, timeout)

    def _wait_healthy(self, ports: dict[str, int], timeout: float) -> None:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving certs; /healthz is public
        deadline = time.monotonic() + timeout
        pending = dict(ports)
        while pending and time.monotonic() < deadline:
            for name, port in list(pending.items()):
                self.check_alive()
                try:
                    with urllib.request.urlopen(
                        f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2
                    ) as resp:
                        if resp.status == 200:
                            del pending[name]
                except OSError:
                    pass
            time.sleep(0.3)
        if pending:
            raise ControlPlaneError(
                f"{', '.join(pending)} not healthy after {timeout:.0f}s:\n{self.log_tails()}"
            )

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited ({proc.returncode}):\n{self.log_tails()}")

    def log_tails(self) -> str:
        return (
            f"--- kube-scheduler log (tail) ---\n{tail(self.scheduler_log)}\n"
            f"--- kube-controller-manager log (tail) ---\n{tail(self.controller_manager_log)}"
        )

    def stop(self) -> None:
        for proc in self._procs.values():
            stop_process(proc, _STOP_GRACE_S)
        self._procs.clear()
