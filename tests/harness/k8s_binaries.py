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
import glob
import hashlib
import os
import re
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


def _build_env(go: GoCommand) -> dict[str, str]:
    # Static binaries like upstream's release builds: no C toolchain needed. A go older
    # than go.mod asks for fetches that toolchain (GOTOOLCHAIN=auto), unless the
    # environment already names a way to switch.
    env = {**os.environ, "CGO_ENABLED": "0"}
    if go.toolchain and env.get("GOTOOLCHAIN", "local") in ("", "local"):
        env["GOTOOLCHAIN"] = go.toolchain
    return env


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


# Go 1.21 is the first `go` that fetches the toolchain a go.mod asks for from the
# module proxy (GOTOOLCHAIN=auto); an older one must itself be new enough.
_SWITCHING_GO = (1, 21, 0)


@dataclass(frozen=True)
class GoCommand:
    """The `go` that builds tests/k8s, and the GOTOOLCHAIN it needs for that."""

    path: str
    version: tuple[int, int, int]
    toolchain: str | None = None  # None: it is new enough itself; "auto": it fetches one


def parse_go_version(text: str) -> tuple[int, int, int] | None:
    """The first Go release named in text, padded to three parts.

    parse_go_version("go version go1.23.5 linux/amd64") == (1, 23, 5)
    parse_go_version("go 1.23") == (1, 23, 0); parse_go_version("devel") is None
    """
    match = re.search(r"\bgo ?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def required_go_version(go_mod: Path = GO_MODULE_DIR / "go.mod") -> tuple[int, int, int]:
    """The oldest Go that builds the module: its `toolchain` line, else its `go` line."""
    lines = go_mod.read_text().splitlines()
    for directive in ("toolchain", "go"):
        for line in lines:
            if line.startswith(directive + " ") and (version := parse_go_version(line)):
                return version
    raise ValueError(f"{go_mod} has no `go` line")


def _go_candidates() -> list[str]:
    # $GO is a choice, not a hint. Otherwise PATH, the go.dev tarball's place, and
    # Debian's versioned packages (golang-1.2x-go), which golang-go links as /usr/bin/go.
    if os.environ.get("GO"):
        return [os.environ["GO"]]
    paths = [shutil.which("go"), "/usr/local/go/bin/go", *glob.glob("/usr/lib/go-*/bin/go")]
    seen: dict[str, str] = {}
    for path in paths:
        if path and os.access(path, os.X_OK):
            seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


def _go_version(go: str) -> tuple[int, int, int] | None:
    # The binary's own version: from /, and with GOTOOLCHAIN=local so it switches to nothing.
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], cwd="/", env={**os.environ, "GOTOOLCHAIN": "local"},
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_go_version(out)


def choose_go(
    found: Sequence[tuple[str, tuple[int, int, int] | None]], need: tuple[int, int, int]
) -> GoCommand | None:
    """The first go at least as new as need, else the first that can fetch that toolchain."""
    for path, version in found:
        if version is not None and version >= need:
            return GoCommand(path, version)
    for path, version in found:
        if version is not None and version >= _SWITCHING_GO:
            return GoCommand(path, version, toolchain="auto")
    return None


def _version_text(version: tuple[int, int, int] | None) -> str:
    return "go" + ".".join(map(str, version)) if version else "no version"


def find_go() -> GoCommand:
    need = required_go_version()
    found = [(path, _go_version(path)) for path in _go_candidates()]
    go = choose_go(found, need)
    if go is None:
        seen = "; ".join(f"{path} is {_version_text(v)}" for path, v in found) or "no `go` found"
        raise PrerequisiteMissing(
            f"no usable Go to build kube-apiserver {K8S_VERSION} once ({seen}): tests/k8s "
            f"needs {_version_text(need)}, or Go >= 1.21 to fetch it through GOTOOLCHAIN. "
            "As root, scripts/install-go installs Debian's golang-go (on Debian 12 from "
            "bookworm-backports: bookworm's own is Go 1.19); or set GO=/path/to/go, "
            "or KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd and kubectl"
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


def _run_go_build(go: GoCommand, name: str, out: Path) -> None:
    """Build one binary, logging go's output and a progress line every 30 s."""
    started = time.monotonic()
    _log(f"building {name} {K8S_VERSION}; a first build takes many minutes")
    proc = subprocess.Popen(
        _build_command(go.path, name, out),
        cwd=GO_MODULE_DIR,
        env=_build_env(go),
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


def _build(go: GoCommand, bin_dir: Path, name: str) -> None:
    # Build beside the cache and rename(2) into place: a reader never sees a
    # half-written binary, and a failed build leaves the old stamp mismatched.
    with tempfile.TemporaryDirectory(dir=bin_dir.parent, prefix=".build-") as scratch:
        out = Path(scratch) / name
        _run_go_build(go, name, out)
        os.replace(out, bin_dir / name)
    (bin_dir / f"{name}.failed").unlink(missing_ok=True)
    (bin_dir / f"{name}.sha256").write_text(source_hash(name) + "\n")


def _build_optional(go: GoCommand, bin_dir: Path, name: str) -> None:
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


def check_go() -> str:
    """Find the go and run `go version` in tests/k8s as the build runs it.

    That fetches the toolchain go.mod asks for when the go found is older (so
    install time, not the first build, downloads it); the line says what was chosen.
    """
    go = find_go()
    result = subprocess.run(
        [go.path, "version"], cwd=GO_MODULE_DIR, env=_build_env(go),
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if result.returncode != 0:
        raise BuildFailed(f"`{go.path} version` in {GO_MODULE_DIR} failed: {result.stderr.strip()}")
    how = f", GOTOOLCHAIN={go.toolchain}" if go.toolchain else ""
    return (
        f"{go.path} ({_version_text(go.version)}{how}) builds tests/k8s with "
        f"{_version_text(parse_go_version(result.stdout))}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (once) and print the k8s test binaries.")
    parser.add_argument("--no-kubelet", action="store_true", help="skip the (optional) kubelet")
    parser.add_argument(
        "--go", action="store_true",
        help="build nothing: print the go found and the Go it builds with (fetching it now "
        "through GOTOOLCHAIN if needed); exit 2 when there is none",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.go:
            print(check_go())
            return 0
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
