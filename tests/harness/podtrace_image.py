"""podtrace's image, built from the repository's Dockerfile with a real Docker Engine.

    python -m harness.podtrace_image [--save PATH]      # `make image`

No registry serves a base image on the machines the tests run on, so when the
Dockerfile's base (`FROM`, e.g. debian:12-slim) is missing from the engine, it is
made locally the way Debian's own images are: `debootstrap --variant=minbase` of
the same release from the Debian archive apt already uses, imported under the
`FROM` name. The Dockerfile stays the one users build with `docker build .`.

The built image is saved as a tar (docker save) in the cache, keyed by the image's
ID, so the cluster tiers import exactly what was built into their containerd.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.docker_engine import DockerError, Engine, docker_engine
from harness.k8s_binaries import PrerequisiteMissing, cache_root

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_REPOSITORY = "podtrace/podtrace"
DEBIAN_SUITES = {"12": "bookworm", "bookworm": "bookworm"}
Log = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    name: str  # podtrace/podtrace:<version>
    image_id: str
    tar: Path  # `docker save` of it, for `ctr images import`
    size_bytes: int
    build_seconds: float
    base_seconds: float  # 0 when the base image was already there


def version() -> str:
    """The distribution's version from pyproject.toml: the image tag and the manifests' tag."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def image_name() -> str:
    return f"{IMAGE_REPOSITORY}:{version()}"


def base_image(dockerfile: Path = DOCKERFILE) -> str:
    """The Dockerfile's (single) FROM image.

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "Dockerfile"
    >>> _ = p.write_text("# c\\nFROM debian:12-slim AS build\\nRUN true\\n")
    >>> base_image(p)
    'debian:12-slim'
    """
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(\S+)", line, re.IGNORECASE)
        if match:
            return match.group(1)
    raise ValueError(f"{dockerfile} has no FROM line")


def debian_suite(image: str) -> str:
    """The Debian suite a `debian:<tag>` base stands for.

    >>> debian_suite("debian:12-slim")
    'bookworm'
    """
    repo, _, tag = image.partition(":")
    release = tag.split("-", 1)[0]
    if repo != "debian" or release not in DEBIAN_SUITES:
        raise PrerequisiteMissing(
            f"the base image {image} is not in the engine and only debian:12* can be made "
            "locally here; pull or build it first"
        )
    return DEBIAN_SUITES[release]


def debian_mirror() -> str:
    """The Debian archive apt on this machine uses (the one reachable here)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s*)?)(\S+/debian)/?\s", text):
            return match.group(1)
    return "http://deb.debian.org/debian"


def build_base(engine: Engine, image: str, log: Log = print) -> float:
    """debootstrap a minbase rootfs and import it as `image`; returns the seconds taken."""
    if shutil.which("debootstrap") is None:
        raise PrerequisiteMissing("`debootstrap` not found: apt-get install debootstrap")
    started = time.monotonic()
    suite, mirror = debian_suite(image), debian_mirror()
    log(f"building the base image {image}: debootstrap --variant=minbase {suite} {mirror}")
    with tempfile.TemporaryDirectory(prefix="podtrace-base-") as scratch:
        root = Path(scratch) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(root), mirror],
            capture_output=True, text=True, check=False, timeout=1800,
        )  # fmt: skip
        if done.returncode != 0:
            raise DockerError(f"debootstrap failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        # As Debian's slim images: no apt lists, no docs, no caches.
        for rel in ("var/lib/apt/lists", "var/cache/apt/archives", "usr/share/doc",
                    "usr/share/man", "usr/share/locale"):  # fmt: skip
            target = root / rel
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        _carry_trust(root)
        tar = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."],
            capture_output=True, check=True,
        )  # fmt: skip
        engine.run("import", "--change", 'CMD ["bash"]', "-", image, input=tar.stdout)
    return time.monotonic() - started


def _carry_trust(root: Path) -> None:
    """The machine's own trust anchors into the base, as a site's base image carries them:
    where package registries are reached through a TLS-intercepting proxy, its CA sits in
    /usr/local/share/ca-certificates (ca-certificates, installed by the Dockerfile, adds
    it to the system store) and pip must be told to use that store, not its own bundle."""
    local = Path("/usr/local/share/ca-certificates")
    certs = sorted(local.glob("*.crt")) if local.is_dir() else []
    if not certs:
        return
    target = root / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for cert in certs:
        shutil.copyfile(cert, target / cert.name)
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")


def saved_tar(image_id: str) -> Path:
    return cache_root() / "images" / f"podtrace-{version()}-{image_id.split(':')[-1][:16]}.tar"


def build_image(log: Log = print, *, rebuild_base: bool = False) -> BuiltImage:
    """Build podtrace/podtrace:<version> from the Dockerfile (base made if missing)."""
    name, base = image_name(), base_image()
    with docker_engine() as engine:
        if rebuild_base and engine.has_image(base):
            engine.run("image", "rm", "--force", base)
        base_seconds = 0.0 if engine.has_image(base) else build_base(engine, base, log)
        log(f"docker build -t {name} {REPO}")
        started = time.monotonic()
        engine.run("build", "--network", "host", "-t", name, str(REPO), timeout=3600)
        build_seconds = time.monotonic() - started
        image_id = engine.run("image", "inspect", "--format", "{{.Id}}", name).stdout
        image_id = image_id.decode().strip()
        size = int(engine.run("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())
        tar = saved_tar(image_id)
        if not tar.is_file():
            tar.parent.mkdir(parents=True, exist_ok=True)
            for old in tar.parent.glob(f"podtrace-{version()}-*.tar"):
                old.unlink()
            partial = tar.with_suffix(".partial")
            engine.run("save", "-o", str(partial), name)
            partial.replace(tar)
    return BuiltImage(name, image_id, tar, size, build_seconds, base_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build podtrace's image (make image).")
    parser.add_argument(
        "--rebuild-base", action="store_true", help="make the base image again (debootstrap)"
    )
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[image] {message}", file=sys.stderr, flush=True)

    try:
        image = build_image(log, rebuild_base=args.rebuild_base)
    except PrerequisiteMissing as exc:
        print(f"prerequisite missing: {exc}", file=sys.stderr)
        return 2
    except DockerError as exc:
        print(exc, file=sys.stderr)
        return 1
    log(
        f"{image.name} ({image.image_id[:19]}): {image.size_bytes / 2**20:.0f} MiB, "
        f"built in {image.build_seconds:.0f}s"
        + (f" (+{image.base_seconds:.0f}s for the base image)" if image.base_seconds else "")
    )
    print(f"image={image.name}\ntar={image.tar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
