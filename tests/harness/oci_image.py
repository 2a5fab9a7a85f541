"""A small OCI image built locally from Debian's busybox-static, for a containerd
with no registry to pull from.

    image = build_busybox_image(tmp_path)          # an OCI layout tar
    import_image(image, address=socket)           # ctr -n k8s.io images import

The tar holds one uncompressed layer (/bin/busybox plus a symlink per applet the
tests use), the image config, the manifest, `index.json` with the
`io.containerd.image.name` annotation that `ctr images import` names the image
by, and `oci-layout`. Every blob is content-addressed by its sha256, and the
layer is built with fixed owners and times, so the same busybox gives the same
image ID. The image's default command sleeps forever, so the same image serves
as the pod sandbox ("pause") image.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "localhost/podtrace-test/busybox:1"
BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh", "true", "false", "sleep", "cat", "echo", "ls", "ps", "id", "env", "wc", "uname",
    "date", "head", "grep", "touch", "mkdir", "rm",
)

_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
_EPOCH = 0  # every entry's mtime: a reproducible layer digest


@dataclass(frozen=True)
class OCIImage:
    name: str
    tar: Path
    image_id: str  # "sha256:<config digest>", what CRI reports as the image's ID
    manifest_digest: str


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = _EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    for key, value in attrs.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _rootfs_layer(busybox: Path, applets: tuple[str, ...]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            _add(tar, d, type=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", data=busybox.read_bytes(), mode=0o755)
        for applet in applets:
            _add(tar, f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777)
        _add(tar, "etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n", mode=0o644)
        _add(tar, "etc/group", data=b"root:x:0:\n", mode=0o644)
    return buf.getvalue()


def build_busybox_image(
    out_dir: Path,
    name: str = DEFAULT_NAME,
    *,
    busybox: Path = BUSYBOX,
    applets: tuple[str, ...] = APPLETS,
) -> OCIImage:
    """Write an OCI layout tar of a busybox image into `out_dir`."""
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} not found: apt-get install busybox-static")
    arch = _ARCH.get(platform.machine(), platform.machine())
    layer = _rootfs_layer(busybox, applets)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sleep", "infinity"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": {"mediaType": _OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": _OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_INDEX,
            "manifests": [
                {
                    "mediaType": _OCI_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "busybox-oci.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "blobs", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "blobs/sha256", type=tarfile.DIRTYPE, mode=0o755)
        for blob in (layer, config, manifest):
            _add(tar, "blobs/sha256/" + _digest(blob).split(":", 1)[1], data=blob, mode=0o644)
        _add(tar, "oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}', mode=0o644)
        _add(tar, "index.json", data=index, mode=0o644)
    return OCIImage(name, path, _digest(config), _digest(manifest))


def import_image(
    image: OCIImage, address: str | Path, *, namespace: str = "k8s.io", ctr: str = "ctr"
) -> None:
    """Import the image into containerd's `namespace` (k8s.io is the one CRI uses)."""
    import_archive(image.tar, address, namespace=namespace, ctr=ctr)


def import_archive(
    tar: Path, address: str | Path, *, namespace: str = "k8s.io", ctr: str = "ctr",
    timeout: float = 600.0,
) -> None:
    """Import an image archive (OCI layout or `docker save`) into containerd's `namespace`."""
    argv = [ctr, "--address", str(address), "--namespace", namespace, "images", "import"]
    done = subprocess.run(
        [*argv, str(tar)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} {tar} failed ({done.returncode}): "
                           f"{done.stderr.strip()}")  # fmt: skip
