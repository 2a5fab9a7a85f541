"""podtrace's own processes against a cluster: the CRDs installed, the operator
and the node agent started as host processes (as `make demo` and the end-to-end
tests run them), their logs in files, and one way to stop them.

    with Podtrace(kubeconfig, node="podtrace-node", cri_endpoint=..., workdir=dir) as pt:
        pt.agent_log.read_text()

Detached (for the demo): `start_detached(...)` records the PIDs in the work dir
and `stop_detached(dir)` ends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.procs import stop_process, tail

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PIDS = "podtrace.pids"


def kubectl_argv(kubectl: Path | str, kubeconfig: Path) -> list[str]:
    return [str(kubectl), f"--kubeconfig={kubeconfig}"]


def install_crds(kubectl: Path | str, kubeconfig: Path, timeout: float = 60.0) -> None:
    """Apply crds/ server-side and wait until the kinds are served and explained; and
    podtrace's namespace, where the operator publishes the seccomp profiles to install."""
    base = kubectl_argv(kubectl, kubeconfig)
    subprocess.run([*base, "apply", "-f", str(REPO / "manifests" / "base" / "namespace.yaml")],
                   check=True, capture_output=True, text=True)
    subprocess.run([*base, "apply", "--server-side", "--force-conflicts",
                    "--field-manager=podtrace-install", "-k", str(REPO / "crds")],
                   check=True, capture_output=True, text=True)
    subprocess.run([*base, "wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                    "crd/tracingpolicies.podtrace.io", "crd/containertraces.podtrace.io",
                    "crd/nodetracers.podtrace.io"], check=True, capture_output=True, text=True)
    deadline = time.monotonic() + timeout
    for kind in ("tracingpolicy", "containertrace", "nodetracer"):
        while subprocess.run([*base, "explain", kind], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} not served after {timeout:.0f}s")
            time.sleep(0.2)


class Podtrace:
    """The operator and one agent as host processes."""

    def __init__(
        self,
        kubeconfig: Path,
        *,
        node: str,
        cri_endpoint: str,
        workdir: Path,
        metrics_port: int = 0,
        status_interval: str = "1s",
        backend: str = "auto",
        kubepods: str | None = None,
        seccomp_dir: Path | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.node = node
        self.cri_endpoint = cri_endpoint
        self.workdir = workdir
        self.metrics_port = metrics_port
        self.status_interval = status_interval
        self.backend = backend
        self.kubepods = kubepods
        self.seccomp_dir = seccomp_dir  # the kubelet's: installed profiles go there
        self.operator_log = workdir / "operator.log"
        self.agent_log = workdir / "agent.log"
        self.agent_events = workdir / "agent-events.jsonl"
        self._procs: list[subprocess.Popen[bytes]] = []

    def operator_argv(self) -> list[str]:
        return [str(VENV_BIN / "podtrace-operator"), f"--kubeconfig={self.kubeconfig}",
                "--standalone", "--pending-timeout=10m"]

    def agent_argv(self) -> list[str]:
        argv = [str(VENV_BIN / "podtrace-agent"), "run", f"--node-name={self.node}",
                f"--kubeconfig={self.kubeconfig}", f"--runtime-endpoint={self.cri_endpoint}",
                f"--metrics-port={self.metrics_port}",
                f"--status-interval={self.status_interval}", f"--backend={self.backend}"]
        if self.kubepods:
            argv.append(f"--kubepods={self.kubepods}")
        if self.seccomp_dir:
            argv.append(f"--seccomp-dir={self.seccomp_dir}")
        return argv

    def start(self, *, detached: bool = False) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for argv, out, err in (
            (self.operator_argv(), self.operator_log, self.operator_log),
            (self.agent_argv(), self.agent_events, self.agent_log),
        ):
            with open(out, "ab") as stdout, open(err, "ab") as stderr:
                self._procs.append(subprocess.Popen(
                    argv, stdout=stdout, stderr=stderr if err != out else subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=detached,
                ))
        if detached:
            (self.workdir / PIDS).write_text(json.dumps([p.pid for p in self._procs]))

    @property
    def agent_pid(self) -> int:
        """The running agent's process ID (its memory: /proc/<pid>/status)."""
        return self._procs[1].pid

    def restart_agent(self) -> int | None:
        """Stop the agent (SIGTERM, as kubelet stops a pod) and start it again, its logs
        appended to; returns the stopped agent's exit code."""
        stopped = self._procs[1]
        stop_process(stopped, grace=20)
        with open(self.agent_events, "ab") as stdout, open(self.agent_log, "ab") as stderr:
            self._procs[1] = subprocess.Popen(self.agent_argv(), stdout=stdout, stderr=stderr,
                                              stdin=subprocess.DEVNULL)
        return stopped.returncode

    def wait_agent_ready(self, kubectl: Path | str, timeout: float = 120.0) -> dict:
        """Wait until this node's NodeTracer says Ready=True; returns it."""
        base = kubectl_argv(kubectl, self.kubeconfig)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            got = subprocess.run([*base, "get", "nodetracer", self.node, "-o", "json"],
                                 capture_output=True, text=True)
            if got.returncode == 0:
                nt = json.loads(got.stdout)
                conds = (nt.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    return nt
                last = json.dumps(conds)
            time.sleep(0.5)
        raise RuntimeError(f"NodeTracer {self.node} not Ready after {timeout:.0f}s: {last}\n"
                           f"agent log:\n{tail(self.agent_log)}")

    def check_alive(self) -> None:
        for proc, log in zip(self._procs, (self.operator_log, self.agent_log), strict=False):
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n"
                                   f"{tail(log)}")

    def stop(self) -> None:
        for proc in self._procs:  # both shut down at once, then each is waited for
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            stop_process(proc, grace=20)
        self._procs.clear()
        # A stopped agent keeps its BPF pins for the next one (README: Reliability);
        # these tests' agents have no next one.
        from harness.localcluster import remove_pins

        remove_pins(self.node)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stop_detached(workdir: Path, grace: float = 20.0) -> None:
    """End the processes a detached start recorded in `workdir`."""
    record = workdir / PIDS
    if not record.exists():
        return
    pids = json.loads(record.read_text())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    record.unlink()
