"""Real Kubernetes binaries for the cluster tier: kube-apiserver, kubectl, etcd (+ kubelet).

With KUBEBUILDER_ASSETS set (envtest convention) the binaries come from that
directory. Otherwise kube-apiserver, kubectl and kubelet are built once from the
pinned upstream Go modules in tests/k8s/ into a per-version cache directory,
and rebuilt only when the Go sources or the build recipe change; etcd is
Debian's etcd-server.

    python -m harness.k8s_binaries     # from tests/, or with PYTHONPATH=tests: prebuild
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.32.13"
GO_MODULE_DIR = Path(__file__).resolve().parents[1] / "k8s"
# Binaries built by default, each from tests/k8s/cmd/<name>.
BUILT_BINARIES: tuple[str, ...] = ("kube-apiserver", "kubectl", "kubelet")
# A binary whose build failure does not fail ensure_binaries() (the apiserver tier works without).
OPTIONAL_BINARIES = frozenset({"kubelet"})
STAMP_NAME = "source.sha256"
_PROGRESS_EVERY_S = 30.0


class PrerequisiteMissing(RuntimeError):
    """Something the tier needs is not installed; the message says what to install."""


class BuildFailed(RuntimeError):
    """`go build` ran and failed: a real error, not a missing prerequisite."""


@dataclass(frozen=True)
class K8sBinaries:
    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    kubelet: Path | None = None


def _version_ldflags() -> str:
    # Both packages carry their own copy of the version variables: component-base
    # feeds the servers' /version, client-go feeds `kubectl version`'s client side.
    major, minor, _ = K8S_VERSION.lstrip("v").split(".", 2)
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={K8S_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=archive",
        ]
    return " ".join(flags)


def _build_env() -> dict[str, str]:
    # Static binaries like upstream's release builds: no C toolchain needed.
    return {**os.environ, "CGO_ENABLED": "0"}


def _build_command(go: str, name: str, out_dir: Path) -> list[str]:
    return [
        go, "build", "-v", "-trimpath", "-mod=readonly", "-buildvcs=false",
        "-ldflags", _version_ldflags(),
        "-o", str(out_dir / name), f"./cmd/{name}",
    ]  # fmt: skip


def cache_dir() -> Path:
    root = os.environ.get("PODTRACE_CACHE") or str(Path.home() / ".cache" / "podtrace")
    return Path(root) / f"k8s-{K8S_VERSION}" / "bin"


def source_hash() -> str:
    """Hash of everything that decides the build output: module files, mains, recipe."""
    digest = hashlib.sha256()
    files = [GO_MODULE_DIR / "go.mod", GO_MODULE_DIR / "go.sum"]
    files += sorted((GO_MODULE_DIR / "cmd").glob("*/*.go"))
    for path in files:
        digest.update(str(path.relative_to(GO_MODULE_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    recipe = [_version_ldflags(), "CGO_ENABLED=0", *BUILT_BINARIES]
    digest.update("\0".join(recipe).encode())
    return digest.hexdigest()


def find_go() -> str:
    go = os.environ.get("GO") or shutil.which("go")
    if go is None and os.access("/usr/local/go/bin/go", os.X_OK):
        go = "/usr/local/go/bin/go"
    if go is None:
        raise PrerequisiteMissing(
            f"`go` not found (needed once to build kube-apiserver {K8S_VERSION}): install "
            "Go >= 1.23 (https://go.dev/dl, or put /usr/local/go/bin on PATH), "
            "or set KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd and kubectl"
        )
    return go


def find_etcd() -> Path:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise PrerequisiteMissing(
            "`etcd` not found: apt-get install etcd-server (Debian), "
            "or set KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd and kubectl"
        )
    return Path(etcd)


def _log(message: str) -> None:
    print(f"[k8s-binaries] {message}", file=sys.stderr, flush=True)


def _from_kubebuilder_assets(assets: Path) -> K8sBinaries:
    missing = [n for n in ("kube-apiserver", "etcd", "kubectl") if not (assets / n).is_file()]
    if missing:
        raise PrerequisiteMissing(
            f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)} "
            "(envtest layout: kube-apiserver, etcd and kubectl in one directory)"
        )
    kubelet = assets / "kubelet"
    return K8sBinaries(
        kube_apiserver=assets / "kube-apiserver",
        kubectl=assets / "kubectl",
        etcd=assets / "etcd",
        kubelet=kubelet if kubelet.is_file() else None,
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Serialises builds across concurrent pytest processes (e.g. xdist workers, two shells).
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another build holding {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_current(bin_dir: Path, digest: str) -> bool:
    stamp = bin_dir / STAMP_NAME
    if not stamp.is_file() or stamp.read_text().strip() != digest:
        return False
    required = [n for n in BUILT_BINARIES if n not in OPTIONAL_BINARIES]
    return all((bin_dir / n).is_file() for n in required)


def _run_go_build(go: str, name: str, out_dir: Path) -> None:
    """Build one binary, printing a progress line every 30 s; raise BuildFailed with the tail."""
    started = time.monotonic()
    _log(f"building {name} ({K8S_VERSION}); the first build takes many minutes")
    proc = subprocess.Popen(
        _build_command(go, name, out_dir),
        cwd=GO_MODULE_DIR,
        env=_build_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: deque[str] = deque(maxlen=40)
    packages = 0
    done = threading.Event()

    def report() -> None:
        while not done.wait(_PROGRESS_EVERY_S):
            elapsed = time.monotonic() - started
            _log(f"  still building {name}: {elapsed:.0f}s, {packages} packages compiled")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        for line in proc.stdout:
            packages += 1
            tail.append(line.rstrip())
        rc = proc.wait()
    finally:
        done.set()
        proc.stdout.close()
    elapsed = time.monotonic() - started
    if rc != 0:
        raise BuildFailed(f"go build ./cmd/{name} failed (exit {rc}):\n" + "\n".join(tail))
    _log(f"built {name} in {elapsed:.0f}s")


def _build_all(go: str, bin_dir: Path, digest: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    # Build into a scratch dir and move each binary in with rename(2), so a
    # reader never sees a half-written binary and a failed build leaves no stamp.
    with tempfile.TemporaryDirectory(dir=bin_dir.parent, prefix=".build-") as scratch:
        for name in BUILT_BINARIES:
            try:
                _run_go_build(go, name, Path(scratch))
            except BuildFailed as exc:
                if name not in OPTIONAL_BINARIES:
                    raise
                _log(f"optional {name} not built: {exc}")
                (bin_dir / name).unlink(missing_ok=True)
                continue
            os.replace(Path(scratch) / name, bin_dir / name)
    (bin_dir / STAMP_NAME).write_text(digest + "\n")


def _built_binaries() -> tuple[Path, Path, Path | None]:
    bin_dir = cache_dir()
    digest = source_hash()
    if not _is_current(bin_dir, digest):
        go = find_go()
        with _locked(bin_dir.parent / "build.lock"):
            if not _is_current(bin_dir, digest):
                _build_all(go, bin_dir, digest)
    kubelet = bin_dir / "kubelet"
    return bin_dir / "kube-apiserver", bin_dir / "kubectl", kubelet if kubelet.is_file() else None


def ensure_binaries() -> K8sBinaries:
    """Return the binaries, building (once, cached) what is missing or stale."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return _from_kubebuilder_assets(Path(assets))
    etcd = find_etcd()
    kube_apiserver, kubectl, kubelet = _built_binaries()
    return K8sBinaries(kube_apiserver=kube_apiserver, kubectl=kubectl, etcd=etcd, kubelet=kubelet)


def main() -> int:
    try:
        binaries = ensure_binaries()
    except PrerequisiteMissing as exc:
        print(f"prerequisite missing: {exc}", file=sys.stderr)
        return 2
    except BuildFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    for field, path in vars(binaries).items():
        print(f"{field}={path or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
