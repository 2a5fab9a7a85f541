"""scripts/cluster-up and scripts/cluster-down, what `make demo` and `make demo-down` run:
the cluster comes up detached, runs a pod, and goes without a trace, also after its
supervisor was killed outright."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import prereq
from harness.containerd import cgroup_mounts
from harness.k8s_binaries import K8sBinaries, PrerequisiteMissing, ensure_binaries
from harness.kubelet import snapshot_sysctls
from harness.localcluster import missing_prerequisites, read_record

REPO = Path(__file__).resolve().parents[2]
# Its own kubepods, apart from any other kubelet's (each kills the other's pods as orphans).
CGROUP_ROOT = "podtrace-lifecycle-test"
NODE = "podtrace-lifecycle"


@pytest.fixture(scope="module")
def binaries() -> K8sBinaries:
    try:
        found = ensure_binaries()
    except PrerequisiteMissing as exc:
        prereq.missing(str(exc))
    problems = missing_prerequisites(found)
    if problems:
        prereq.missing("local cluster needs: " + "; ".join(problems))
    return found


@pytest.fixture
def state_dir() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="podtrace-lc-"))  # short: unix socket paths
    yield parent / "state"
    if (parent / "state").exists():  # a failed test: take the cluster down anyway
        _script("cluster-down", parent / "state")
    shutil.rmtree(parent, ignore_errors=True)


def _script(name: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PODTRACE_CLUSTER_STATE": str(state), "PYTHON": sys.executable}
    return subprocess.run(
        [str(REPO / "scripts" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _up(state: Path) -> dict[str, Any]:
    up = _script("cluster-up", state, "--cgroup-root", f"/{CGROUP_ROOT}", "--node-name", NODE)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"node {NODE} Ready" in up.stderr  # the progress lines
    assert f"kubeconfig:   {state / 'kubeconfig'}" in up.stdout
    record = read_record(state)
    assert record is not None
    return record


def _run_pod(binaries: K8sBinaries, record: dict[str, Any]) -> int:
    """A pod through kubectl; returns the host PID of its container's process."""
    kubectl = [str(binaries.kubectl), f"--kubeconfig={record['kubeconfig']}"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "hostNetwork": True,
            "containers": [
                {
                    "name": "main",
                    "image": record["image"],
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        },
    }
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(pod), text=True, check=True)
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s"], check=True
    )
    get = [*kubectl, "get", "pod", "sleeper", "-o", "json"]
    status = json.loads(subprocess.run(get, capture_output=True, text=True, check=True).stdout)
    uid = status["metadata"]["uid"]
    cid = status["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    procs = Path(f"/sys/fs/cgroup/unified/{CGROUP_ROOT}/kubepods/besteffort/pod{uid}/{cid}")
    return int((procs / "cgroup.procs").read_text().split()[0])


def _traces(state: Path, record: dict[str, Any]) -> dict[str, list[str]]:
    """Whatever of the cluster is still on the host."""
    paths = [str(state), *record.get("apiserver_dirs", [])]
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(p in cmdline for p in paths):
                processes.append(f"{entry.name}: {cmdline[:120]}")
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if any(p in line.split()[4] for p in paths)]
    return {
        "processes": processes,
        "mounts": mounts,
        "cgroups": [str(m / CGROUP_ROOT) for m in cgroup_mounts() if (m / CGROUP_ROOT).exists()],
        "files": [p for p in paths if Path(p).exists()],
    }


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_up_then_down_leaves_nothing(binaries: K8sBinaries, state_dir: Path) -> None:
    sysctls = snapshot_sysctls()
    record = _up(state_dir)
    again = _script("cluster-up", state_dir)
    assert again.returncode == 0 and "already up" in again.stdout
    pid = _run_pod(binaries, record)

    down = _script("cluster-down", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "cluster down in" in down.stdout
    assert not _alive(pid)
    assert _traces(state_dir, record) == {"processes": [], "mounts": [], "cgroups": [], "files": []}
    assert snapshot_sysctls() == sysctls  # kubelet's kernel tunables put back
    assert "nothing to tear down" in _script("cluster-down", state_dir).stdout


def test_down_after_the_supervisor_was_killed_leaves_nothing(
    binaries: K8sBinaries, state_dir: Path
) -> None:
    sysctls = snapshot_sysctls()
    record = _up(state_dir)
    pid = _run_pod(binaries, record)
    os.kill(record["supervisor_pid"], signal.SIGKILL)  # no teardown at all
    deadline = time.monotonic() + 10
    while _alive(record["supervisor_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(pid), "the container outlives its kubelet and containerd (its shim keeps it)"

    down = _script("cluster-down", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not _alive(pid)
    assert _traces(state_dir, record) == {"processes": [], "mounts": [], "cgroups": [], "files": []}
    assert snapshot_sysctls() == sysctls
