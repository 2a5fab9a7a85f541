"""Runtime tier fixtures: a real containerd + runc with a locally built busybox image.

One containerd serves the whole session; tests that stop or reconfigure a
runtime start their own with `start_containerd`. Fixture timings are printed in
the terminal summary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from harness import prereq
from harness.containerd import Containerd, PodRunner, StartContainerd
from harness.oci_image import BUSYBOX, OCIImage, build_busybox_image, import_image
from podtrace_agent.cri.client import CRIClient

TIMINGS: dict[str, float] = {}


def _prerequisites() -> None:
    prereq.need_root("the runtime tier (containerd, runc, cgroups)")
    hint = "run scripts/install-deps as root (apt: containerd runc busybox-static)"
    for binary in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "setpriv"):
        prereq.need_binary(binary, hint)
    if not BUSYBOX.is_file():
        prereq.missing(f"{BUSYBOX} not found: {hint}")


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> OCIImage:
    _prerequisites()
    began = time.monotonic()
    image = build_busybox_image(tmp_path_factory.mktemp("image"))
    TIMINGS["image build"] = time.monotonic() - began
    return image


@pytest.fixture(scope="session")
def start_containerd(busybox_image: OCIImage) -> Iterator[StartContainerd]:
    """Start a containerd (own temp dir) with the test image imported; all are
    cleaned up at the end of the session."""
    started: list[Containerd] = []

    def start(*, with_image: bool = True, disabled_plugins: tuple[str, ...] = ()) -> Containerd:
        cd = Containerd(sandbox_image=busybox_image.name, disabled_plugins=disabled_plugins)
        started.append(cd)
        cd.start()
        TIMINGS.setdefault("containerd start", cd.timings["containerd start"])
        if with_image:
            began = time.monotonic()
            import_image(busybox_image, cd.socket)
            TIMINGS.setdefault("image import", time.monotonic() - began)
        return cd

    yield start
    for cd in started:
        began = time.monotonic()
        cd.close()
        TIMINGS.setdefault("containerd cleanup", time.monotonic() - began)
        if "containerd restart" in cd.timings:
            TIMINGS.setdefault("containerd restart", cd.timings["containerd restart"])


@pytest.fixture(scope="session")
def containerd(start_containerd: StartContainerd) -> Containerd:
    return start_containerd()


@pytest.fixture(scope="session")
def cri(containerd: Containerd) -> Iterator[CRIClient]:
    with CRIClient(containerd.endpoint, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def pods(cri: CRIClient, containerd: Containerd) -> Iterator[PodRunner]:
    runner = PodRunner(cri, containerd.workdir / "pods")
    yield runner
    for call, took in runner.timings.items():
        TIMINGS.setdefault(call, took)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        line = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in TIMINGS.items())
        terminalreporter.write_line(f"runtime fixture timings: {line}")
