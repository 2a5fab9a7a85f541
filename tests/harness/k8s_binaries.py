"""Real Kubernetes binaries for the cluster tier: kube-apiserver, kubectl, etcd (+ kubelet).

With KUBEBUILDER_ASSETS set (envtest convention) the binaries come from that
directory. Otherwise kube-apiserver, kubectl and (best effort) kubelet are
built once from the pinned upstream Go modules in tests/k8s/ into a cache
directory, and rebuilt only when their Go sources or the build recipe change;
etcd is Debian's etcd-server.

    python -m harness.k8s_binaries [--no-kubelet]   # from tests/, or with PYTHONPATH=tests
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.32.13"
GO_MODULE_DIR = Path(__file__).resolve().parents[1] / "k8s"
REQUIRED = ("kube-apiserver", "kubectl")
OPTIONAL = ("kubelet", "kube-scheduler", "kube-controller-manager")  # best effort: the
# apiserver tier runs without them; the local cluster needs the kubelet, the install
# tier (Deployments, DaemonSets) the scheduler and controller-manager too.
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
    kube_scheduler: Path | None = None
    kube_controller_manager: Path | None = None


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


def _build_command(go: str, name: str, out: Path) -> list[str]:
    # -mod=readonly: the committed go.sum is the whole truth; never edit the tree.
    return [
        go, "build", "-v", "-trimpath", "-mod=readonly", "-buildvcs=false",
        "-ldflags", _version_ldflags(),
        "-o", str(out), f"./cmd/{name}",
    ]  # fmt: skip


def _build_env() -> dict[str, str]:
    # Static binaries like upstream's release builds: no C toolchain needed.
    return {**os.environ, "CGO_ENABLED": "0"}


def cache_root() -> Path:
    """Where every build of the tiers is cached: $PODTRACE_CACHE or ~/.cache/podtrace."""
    return Path(os.environ.get("PODTRACE_CACHE") or str(Path.home() / ".cache" / "podtrace"))


def cache_dir() -> Path:
    return cache_root() / f"k8s-{K8S_VERSION}" / "bin"


def source_hash(name: str) -> str:
    """Hash of all that decides one binary: the module files, its main, the recipe."""
    digest = hashlib.sha256()
    files = [GO_MODULE_DIR / "go.mod", GO_MODULE_DIR / "go.sum"]
    files += sorted((GO_MODULE_DIR / "cmd" / name).glob("*.go"))
    for path in files:
        digest.update(str(path.relative_to(GO_MODULE_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    recipe = [*_build_command("go", name, Path(name)), "CGO_ENABLED=0"]
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
    def optional(name: str) -> Path | None:
        return assets / name if (assets / name).is_file() else None

    return K8sBinaries(
        kube_apiserver=assets / "kube-apiserver",
        kubectl=assets / "kubectl",
        etcd=assets / "etcd",
        kubelet=optional("kubelet"),
        kube_scheduler=optional("kube-scheduler"),
        kube_controller_manager=optional("kube-controller-manager"),
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Serialises builds across concurrent pytest processes (xdist workers, two shells).
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for the build that holds {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp_matches(stamp: Path, name: str) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == source_hash(name)


def _is_current(bin_dir: Path, name: str) -> bool:
    return (bin_dir / name).is_file() and _stamp_matches(bin_dir / f"{name}.sha256", name)


def _failed_before(bin_dir: Path, name: str) -> bool:
    # An optional binary that failed to build is not retried until its sources change.
    return _stamp_matches(bin_dir / f"{name}.failed", name)


def build_log(name: str) -> Path:
    return cache_dir() / f"{name}.build.log"


def _run_go_build(go: str, name: str, out: Path) -> None:
    """Build one binary, logging go's output and a progress line every 30 s."""
    started = time.monotonic()
    _log(f"building {name} {K8S_VERSION}; a first build takes many minutes")
    proc = subprocess.Popen(
        _build_command(go, name, out),
        cwd=GO_MODULE_DIR,
        env=_build_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: deque[str] = deque(maxlen=40)
    done = threading.Event()

    def report() -> None:
        while not done.wait(_PROGRESS_EVERY_S):
            elapsed = time.monotonic() - started
            _log(f"  {name}: {elapsed:.0f}s, last package: {tail[-1] if tail else '-'}")

    threading.Thread(target=report, daemon=True).start()
    try:
        with build_log(name).open("w") as log:
            for line in proc.stdout:  # `go build -v` names each package as it compiles
                log.write(line)
                tail.append(line.rstrip())
        rc = proc.wait()
    finally:
        done.set()
        proc.stdout.close()
    if rc != 0:
        raise BuildFailed(
            f"go build ./cmd/{name} in {GO_MODULE_DIR} failed (exit {rc}); "
            f"full log {build_log(name)}:\n" + "\n".join(tail)
        )
    _log(f"built {name} in {time.monotonic() - started:.0f}s")


def _build(go: str, bin_dir: Path, name: str) -> None:
    # Build beside the cache and rename(2) into place: a reader never sees a
    # half-written binary, and a failed build leaves the old stamp mismatched.
    with tempfile.TemporaryDirectory(dir=bin_dir.parent, prefix=".build-") as scratch:
        out = Path(scratch) / name
        _run_go_build(go, name, out)
        os.replace(out, bin_dir / name)
    (bin_dir / f"{name}.failed").unlink(missing_ok=True)
    (bin_dir / f"{name}.sha256").write_text(source_hash(name) + "\n")


def _build_optional(go: str, bin_dir: Path, name: str) -> None:
    try:
        _build(go, bin_dir, name)
    except BuildFailed as exc:
        (bin_dir / f"{name}.failed").write_text(source_hash(name) + "\n")
        _log(f"{name} is optional and was not built: {exc}")


def build(required: Sequence[str], optional: Sequence[str] = ()) -> Path:
    """Bring the named binaries up to date in the cache (under a lock); return its directory.

    A required binary that fails to build raises BuildFailed; an optional one is
    left absent (and not retried until its sources change).
    """
    bin_dir = cache_dir()

    def pending() -> tuple[list[str], list[str]]:
        need = [n for n in required if not _is_current(bin_dir, n)]
        want = [n for n in optional if not (_is_current(bin_dir, n) or _failed_before(bin_dir, n))]
        return need, want

    if pending() == ([], []):
        return bin_dir
    try:
        go = find_go()
    except PrerequisiteMissing:
        if pending()[0]:
            raise
        _log(f"`go` not found: optional {', '.join(optional)} not built")
        return bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    with _locked(bin_dir.parent / "build.lock"):
        need, want = pending()  # another process may have built some meanwhile
        for name in need:
            _build(go, bin_dir, name)
        for name in want:
            _build_optional(go, bin_dir, name)
    return bin_dir


def ensure_binaries(*, kubelet: bool = True) -> K8sBinaries:
    """Return the binaries, building (once, cached) what is missing or stale.

    kubelet, kube-scheduler and kube-controller-manager are best effort: None when
    not asked for (kubelet=False asks for none of them) or when they did not build
    (the reason is in build_log(name)).
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return _from_kubebuilder_assets(Path(assets))
    etcd = find_etcd()
    bin_dir = build(REQUIRED, OPTIONAL if kubelet else ())

    def optional(name: str) -> Path | None:
        return bin_dir / name if kubelet and _is_current(bin_dir, name) else None

    return K8sBinaries(
        kube_apiserver=bin_dir / "kube-apiserver",
        kubectl=bin_dir / "kubectl",
        etcd=etcd,
        kubelet=optional("kubelet"),
        kube_scheduler=optional("kube-scheduler"),
        kube_controller_manager=optional("kube-controller-manager"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (once) and print the k8s test binaries.")
    parser.add_argument("--no-kubelet", action="store_true", help="skip the (optional) kubelet")
    args = parser.parse_args(argv)
    try:
        binaries = ensure_binaries(kubelet=not args.no_kubelet)
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
