"""A Docker Engine to build podtrace's image with: the user's own where one answers,
else a private `dockerd` this module starts and stops.

The private engine never touches a system-wide Docker: its data root is a cache
directory (so image layers survive between runs and a rebuild with no change takes
seconds), its exec root, pid file and socket are its own, and it makes no bridge
and no iptables rules (`--bridge=none`): builds run with `--network host`, which
is all a `RUN apt-get install` or `pip install` needs.

    with docker_engine() as docker:          # DockerEngine or UserEngine
        docker.run("build", "--network", "host", "-t", name, ".")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.k8s_binaries import PrerequisiteMissing, cache_root
from harness.procs import stop_process, tail

# A unix socket path is limited to 108 bytes: keep the exec root short.
EXEC_ROOT = Path("/run/podtrace-docker")


class DockerError(RuntimeError):
    """A docker command failed; the message carries its output."""


def docker_client() -> str:
    """The Docker CLI: Debian's (the engine's own version) before any other on PATH."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise PrerequisiteMissing("`docker` not found: apt-get install docker.io")


class Engine:
    host: str  # DOCKER_HOST for the client

    def env(self) -> dict[str, str]:
        # The legacy builder: BuildKit needs a buildx plugin Debian's client lacks.
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def run(
        self, *args: str, input: bytes | None = None, timeout: float = 1800.0
    ) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [docker_client(), *args],
            input=input,
            env=self.env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise DockerError(
                f"docker {' '.join(args)} failed (exit {done.returncode}):\n"
                + "\n".join(output.splitlines()[-40:])
            )
        return done

    def has_image(self, name: str) -> bool:
        done = subprocess.run(
            [docker_client(), "image", "inspect", name],
            env=self.env(), capture_output=True, check=False,
        )  # fmt: skip
        return done.returncode == 0


class UserEngine(Engine):
    """A Docker Engine that already answers (DOCKER_HOST, or the default socket)."""

    def __init__(self, host: str) -> None:
        self.host = host


class DockerEngine(Engine):
    """A private dockerd: own data root (cached), exec root, pid file and socket."""

    def __init__(self, data_root: Path | None = None, exec_root: Path = EXEC_ROOT) -> None:
        self.data_root = data_root or cache_root() / "docker"
        self.exec_root = exec_root
        self.socket = exec_root / "docker.sock"
        self.pidfile = exec_root / "dockerd.pid"
        self.log = self.data_root.parent / "dockerd.log"
        self.host = f"unix://{self.socket}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not os.access(dockerd, os.X_OK):
            raise PrerequisiteMissing("`dockerd` not found: apt-get install docker.io")
        if os.geteuid() != 0:
            raise PrerequisiteMissing("a private dockerd needs root")
        self._stop_stale()
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        argv = [
            dockerd,
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.host}",
            "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
            "--log-level=warn",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            # setpriv --pdeathsig: dockerd dies with whoever started it.
            self._proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--", *argv],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DockerError(f"dockerd exited ({self._proc.returncode}):\n{tail(self.log)}")
            done = subprocess.run(
                [docker_client(), "version", "--format", "{{.Server.Version}}"],
                env=self.env(), capture_output=True, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise DockerError(f"dockerd did not answer within {timeout:.0f}s:\n{tail(self.log)}")

    def _stop_stale(self) -> None:
        # A dockerd of ours left by a killed run holds the data root's lock.
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if str(self.data_root).encode() in cmdline:
            os.kill(pid, 15)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self._proc, grace=20.0)
        self._proc = None
        # dockerd leaves its exec root's mounts (netns, plugins) behind on some paths.
        if self.exec_root.exists():
            mounts = [
                line.split(" ")[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split(" ")[4].startswith(str(self.exec_root))
            ]
            for point in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            shutil.rmtree(self.exec_root, ignore_errors=True)


def _user_engine_host() -> str | None:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker_client()
    except PrerequisiteMissing:
        return None
    done = subprocess.run(
        [client, "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, "DOCKER_HOST": host}, capture_output=True, check=False, timeout=20,
    )  # fmt: skip
    return host if done.returncode == 0 else None


@contextmanager
def docker_engine(prefer: Sequence[str] = ("user", "private")) -> Iterator[Engine]:
    """The user's running engine if one answers, else a private one for the block."""
    if "user" in prefer:
        host = _user_engine_host()
        if host is not None:
            yield UserEngine(host)
            return
    engine = DockerEngine()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
