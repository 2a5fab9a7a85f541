"""A real etcd + kube-apiserver on loopback, for the cluster test tier.

    with LocalAPIServer(ensure_binaries()) as api:
        api.kubectl("get", "namespaces")

Authentication: the admin is a client certificate in `system:masters` (so RBAC,
which is on, lets it do anything); ServiceAccount tokens come from the
TokenRequest API, which needs no controller-manager. No controller-manager runs,
so nothing creates a namespace's `default` ServiceAccount (Pods need it under the
ServiceAccount admission plugin: see `ensure_service_account`), garbage collection
of owned objects does not happen, and deleted namespaces stay Terminating.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.k8s_binaries import K8sBinaries
from harness.procs import stop_process, tail

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "podtrace-admin"
_STOP_GRACE_S = 10.0


class StartupError(RuntimeError):
    """etcd or kube-apiserver did not become ready; the message carries their log tails."""


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}"


# --- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_certificate(
    subject: x509.Name,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Pem]:
    """One certificate: self-signed when `issuer` is None. P-256 keys: fast to generate."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert, key, Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class _Pki:
    ca: Pem
    serving: Pem
    admin: Pem
    service_account_key: bytes  # RSA private key, PEM; the apiserver derives the public key


def _make_pki(extra_ips: Sequence[str] = ()) -> _Pki:
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podtrace-test-ca")])
    ca_cert, ca_key, ca = issue_certificate(ca_name, None, ca=True)
    signer = (ca_cert.subject, ca_key)
    _, _, serving = issue_certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        signer,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        ips=[
            "127.0.0.1",
            str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts())),
            *extra_ips,
        ],
        dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
    )
    admin_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
        ]
    )
    _, _, admin = issue_certificate(admin_name, signer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    # RS256 is what every ServiceAccount token consumer understands.
    sa_key = _key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _Pki(ca=ca, serving=serving, admin=admin, service_account_key=sa_key)


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free right now (a tiny race with other processes is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(
    argv: Sequence[str | os.PathLike[str]], log: Path, append: bool = False
) -> subprocess.Popen[bytes]:
    # setpriv --pdeathsig: if pytest is killed outright, etcd and the apiserver die
    # with it (preexec_fn would do the same but is unsafe once threads run).
    command = [str(a) for a in argv]
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def _etcd_supports(etcd: Path, flag: str) -> bool:
    help_text = subprocess.run(
        [str(etcd), "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    return flag in help_text.stdout + help_text.stderr


def _etcd_data_parent() -> str | None:
    # etcd fsyncs every write; on tmpfs that is free. etcd 3.4 has no --unsafe-no-fsync.
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


# --- the server ---------------------------------------------------------------------------


class LocalAPIServer:
    """etcd + kube-apiserver on free loopback ports, torn down (and cleaned up) on exit."""

    def __init__(
        self,
        binaries: K8sBinaries,
        *,
        ready_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        bind_address: str = "127.0.0.1",
        serving_ips: Sequence[str] = (),
    ) -> None:
        """`bind_address` 0.0.0.0 and the node's IP in `serving_ips` make the apiserver
        reachable from pods on a pod network (the in-cluster install); clients here
        keep using 127.0.0.1."""
        self.binaries = binaries
        self.bind_address = bind_address
        self.serving_ips = list(serving_ips)
        self.ready_timeout = ready_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.workdir = Path(tempfile.mkdtemp(prefix="podtrace-apiserver-"))
        self._etcd_dir = Path(tempfile.mkdtemp(prefix="podtrace-etcd-", dir=_etcd_data_parent()))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.etcd_log = self.workdir / "etcd.log"
        self.apiserver_log = self.workdir / "kube-apiserver.log"
        self.startup_seconds: float | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._pki: _Pki | None = None
        self._argv: list[str | Path] = []

    @property
    def etcd_dir(self) -> Path:
        """etcd's data dir (on tmpfs where there is one); removed on exit like `workdir`."""
        return self._etcd_dir

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

    def start(self) -> None:
        started = time.monotonic()
        self._pki = _make_pki(self.serving_ips)
        files = self._write_pki(self._pki)
        etcd_url = self._start_etcd()
        self._argv = self._apiserver_argv(etcd_url, files)
        self._apiserver = _spawn(self._argv, self.apiserver_log)
        self._wait_ready()
        self._write_kubeconfig(self.kubeconfig, self._admin_user())
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        stop_process(self._apiserver, _STOP_GRACE_S)
        stop_process(self._etcd, _STOP_GRACE_S)
        if os.environ.get("PODTRACE_KEEP_APISERVER_DIR"):
            print(f"kept {self.workdir} and {self._etcd_dir}", file=sys.stderr)
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self._etcd_dir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """An outage: kube-apiserver alone stops (SIGTERM); etcd and its data, the
        certificates and the port stay for `start_apiserver`."""
        stop_process(self._apiserver, _STOP_GRACE_S)
        self._apiserver = None

    def start_apiserver(self) -> float:
        """kube-apiserver again after `stop_apiserver`, with the same flags (so the same
        etcd, certificates and port); returns the seconds until it was ready."""
        assert self._argv and self._apiserver is None, "start() first, then stop_apiserver()"
        began = time.monotonic()
        self._apiserver = _spawn(self._argv, self.apiserver_log, append=True)
        self._wait_ready()
        return time.monotonic() - began

    def _start_etcd(self) -> str:
        client = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        argv: list[str | Path] = [
            self.binaries.etcd,
            "--name=podtrace",
            f"--data-dir={self._etcd_dir / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=podtrace={peer}",
            "--logger=zap",
            "--log-level=warn",
        ]
        if _etcd_supports(self.binaries.etcd, "--unsafe-no-fsync"):
            argv.append("--unsafe-no-fsync")
        self._etcd = _spawn(argv, self.etcd_log)
        return client

    def _apiserver_argv(self, etcd_url: str, files: dict[str, Path]) -> list[str | Path]:
        return [
            self.binaries.kube_apiserver,
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.bind_address}",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir}",
            f"--tls-cert-file={files['serving.crt']}",
            f"--tls-private-key-file={files['serving.key']}",
            f"--client-ca-file={files['ca.crt']}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={files['sa.key']}",
            f"--service-account-signing-key-file={files['sa.key']}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            # Endpoints may not hold a loopback address, so the `kubernetes` Service stays empty.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",  # the agent DaemonSet is privileged
            "--profiling=false",
            "--v=1",
            *self.extra_apiserver_args,
        ]

    def _write_pki(self, pki: _Pki) -> dict[str, Path]:
        contents = {
            "ca.crt": pki.ca.cert,
            "serving.crt": pki.serving.cert,
            "serving.key": pki.serving.key,
            "admin.crt": pki.admin.cert,
            "admin.key": pki.admin.key,
            "sa.key": pki.service_account_key,
        }
        files: dict[str, Path] = {}
        for name, data in contents.items():
            path = self.workdir / name
            path.write_bytes(data)
            path.chmod(0o600)
            files[name] = path
        return files

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver)):
                if proc is not None and proc.poll() is not None:
                    raise self._startup_error(f"{name} exited with code {proc.returncode}")
            try:
                status, body = self._request("/readyz")
                if status == 200:
                    return
                last_error = f"/readyz {status}: {body[-500:]!r}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = str(exc)
            time.sleep(0.25)
        raise self._startup_error(f"not ready after {self.ready_timeout:.0f}s (last: {last_error})")

    def _startup_error(self, what: str) -> StartupError:
        # The logs go with the work dir on exit: PODTRACE_KEEP_APISERVER_DIR=1 keeps them.
        return StartupError(
            f"kube-apiserver at {self.url}: {what}\n"
            f"--- kube-apiserver log (tail) ---\n{tail(self.apiserver_log)}\n"
            f"--- etcd log (tail) ---\n{tail(self.etcd_log)}"
        )

    # -- access --

    def _ssl_context(self) -> ssl.SSLContext:
        assert self._pki is not None, "server not started"
        ctx = ssl.create_default_context(cadata=self._pki.ca.cert.decode())
        ctx.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
        return ctx

    def _request(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                self.url + path, context=self._ssl_context(), timeout=5
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode(errors="replace")

    def get_json(self, path: str) -> Any:
        """GET `path` as the admin; raise on a non-200 answer."""
        status, body = self._request(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body}")
        return json.loads(body)

    def _admin_user(self) -> dict[str, str]:
        assert self._pki is not None, "server not started"
        return {
            "client-certificate-data": base64.b64encode(self._pki.admin.cert).decode(),
            "client-key-data": base64.b64encode(self._pki.admin.key).decode(),
        }

    def _write_kubeconfig(self, path: Path, user: dict[str, str]) -> Path:
        assert self._pki is not None, "server not started"
        # JSON is YAML: every kubeconfig reader accepts it, and no YAML library is needed.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "podtrace-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self._pki.ca.cert).decode(),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {"name": "podtrace-test", "context": {"cluster": "podtrace-test", "user": "user"}}
            ],
            "current-context": "podtrace-test",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def token_kubeconfig(self, token: str, name: str) -> Path:
        """A kubeconfig in the work dir that authenticates with a bearer `token`."""
        return self._write_kubeconfig(self.workdir / f"{name}.kubeconfig", {"token": token})

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # mirrors subprocess.run
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl against this server (as the admin unless `kubeconfig` is given)."""
        argv = [str(self.binaries.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def ensure_service_account(self, namespace: str, name: str = "default") -> None:
        """Create a ServiceAccount (and its namespace) if missing: no controller-manager does."""
        manifest = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            },
        ]
        for obj in manifest:
            self.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(obj))

    def make_token(
        self, namespace: str, serviceaccount: str, *, duration: str = "1h", audience: str = ""
    ) -> str:
        """A bound ServiceAccount token from the TokenRequest API (the SA must exist)."""
        args = ["create", "token", serviceaccount, "-n", namespace, f"--duration={duration}"]
        if audience:
            args.append(f"--audience={audience}")
        return self.kubectl(*args).stdout.strip()
