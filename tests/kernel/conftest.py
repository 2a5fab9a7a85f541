"""Kernel tier fixtures: a kubelet-like hierarchy in the real cgroup2 tree, a
helper program that makes exactly N getppid calls, and both backends started
once per session (an auto-trace mask, so containers created later are traced).

The hierarchy is /kubepods/besteffort/pod<uid>/<64 hex> in the cgroup2 mount.
Another tier's containerd may use the same /kubepods: pod UIDs are unique and
only what this tier created is removed, deepest first, after killing its
processes.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_support import (
    HELPER_C,
    Collector,
    Hierarchy,
    cgroup2_mount,
    require_bcc,
    start_backend,
)

from harness.prereq import missing, need_binary, need_root
from podtrace_agent.backend import KubepodsRoot


@pytest.fixture(scope="session", autouse=True)
def no_standalone_pins_left() -> Iterator[None]:
    """A standalone agent a test killed leaves its pins (and programs) behind for the
    next one; at the end of the tier there is no next one."""
    yield
    from podtrace_agent.bpf.pins import PIN_ROOT, remove_tree

    remove_tree(PIN_ROOT / "standalone")


@pytest.fixture(scope="session")
def cgroup2() -> Path:
    need_root("the kernel tier (BPF, tracefs, cgroups)")
    mount = cgroup2_mount()
    if mount is None:
        missing("no cgroup2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified)")
    return mount  # type: ignore[return-value]


@pytest.fixture(scope="session")
def hierarchy(cgroup2: Path) -> Iterator[Hierarchy]:
    h = Hierarchy(cgroup2, "kubepods")
    yield h
    h.cleanup()


@pytest.fixture(scope="session")
def kubepods(hierarchy: Hierarchy) -> KubepodsRoot:
    return hierarchy.root()


@pytest.fixture
def instance(request: pytest.FixtureRequest) -> Iterator[str]:
    """A pin instance of the test's own (test-<module's last word>-<random>) for an agent
    run with --instance; its pins are removed after (a killed agent leaves them)."""
    require_bcc()
    from podtrace_agent.bpf import pins

    name = f"test-{request.module.__name__.rsplit('_', 1)[-1]}-{uuid.uuid4().hex[:8]}"
    yield name
    pins.remove_tree(pins.PIN_ROOT / name)


@pytest.fixture(scope="session")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = need_binary("cc", "apt-get install gcc")
    out = tmp_path_factory.mktemp("helper") / "helper"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(out), str(HELPER_C)], check=True)
    return out


@pytest.fixture(scope="session")
def bcc_collector(kubepods: KubepodsRoot) -> Iterator[Collector]:
    backend = start_backend("bcc", kubepods)
    yield Collector(backend)
    backend.close()


@pytest.fixture(scope="session")
def ftrace_collector(kubepods: KubepodsRoot) -> Iterator[Collector]:
    backend = start_backend("ftrace", kubepods)
    yield Collector(backend)
    backend.close()


@pytest.fixture(params=["bcc", "ftrace"])
def collector(request: pytest.FixtureRequest) -> Collector:
    return request.getfixturevalue(f"{request.param}_collector")


