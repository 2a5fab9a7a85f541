"""One table for "is this cgroup a container", run against the rule
(podtrace_agent.kubepods) and its in-kernel twin (bpf/container.h, compiled
here with the host's cc, fed the absolute paths and levels the cgroup_mkdir
tracepoint gives). Layouts: cgroupfs and systemd names, kind's cgroup root
/kubelet, CRI-O, docker, k3s; a nested node's long absolute paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.prereq import need_binary
from podtrace_agent.bpf.wire import BPF_DIR
from podtrace_agent.identity import parse
from podtrace_agent.kubepods import is_container_cgroup, qos_names

UID = "0a1b2c3d-0000-4a4a-8b8b-0123456789ab"
SUID = UID.replace("-", "_")
CID = "c" * 64

CGROUPFS = "kubepods"
SYSTEMD = "kubepods.slice"
KIND = "kubelet.slice/kubelet-kubepods.slice"

TABLE: list[tuple[str, str, bool]] = [
    # cgroupfs driver: containerd, docker (cri-dockerd), k3s
    (CGROUPFS, "besteffort", False),
    (CGROUPFS, "burstable", False),
    (CGROUPFS, f"pod{UID}", False),  # a guaranteed pod
    (CGROUPFS, f"besteffort/pod{UID}", False),
    (CGROUPFS, f"besteffort/pod{UID}/{CID}", True),
    (CGROUPFS, f"burstable/pod{UID}/{CID}", True),
    (CGROUPFS, f"pod{UID}/{CID}", True),
    (CGROUPFS, f"pod{UID}/{CID}/container", True),  # crun's sub-cgroup
    (CGROUPFS, f"besteffort/pod{UID}/crio-{CID}", True),  # CRI-O on cgroupfs
    # systemd driver: containerd, CRI-O, docker
    (SYSTEMD, "kubepods-besteffort.slice", False),
    (SYSTEMD, "kubepods-burstable.slice", False),
    (SYSTEMD, f"kubepods-besteffort.slice/kubepods-besteffort-pod{SUID}.slice", False),
    (SYSTEMD, f"kubepods-besteffort.slice/kubepods-besteffort-pod{SUID}.slice/"
              f"cri-containerd-{CID}.scope", True),
    (SYSTEMD, f"kubepods-burstable.slice/kubepods-burstable-pod{SUID}.slice/"
              f"crio-{CID}.scope", True),
    (SYSTEMD, f"kubepods-pod{SUID}.slice", False),
    (SYSTEMD, f"kubepods-pod{SUID}.slice/docker-{CID}.scope", True),
    # kind: kubelet's systemd driver with cgroup root /kubelet
    (KIND, "kubelet-kubepods-besteffort.slice", False),
    (KIND, "kubelet-kubepods-burstable.slice", False),
    (KIND, f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{SUID}.slice",
     False),
    (KIND, f"kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{SUID}.slice",
     False),
    (KIND, f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{SUID}.slice/"
           f"cri-containerd-{CID}.scope", True),
    (KIND, f"kubelet-kubepods-pod{SUID}.slice", False),
    (KIND, f"kubelet-kubepods-pod{SUID}.slice/cri-containerd-{CID}.scope", True),
]

# A kind node's own cgroup on a Docker host: the kernel's paths start with it.
NODE = f"/system.slice/docker-{'d' * 64}.scope"


def _ids(row: tuple[str, str, bool]) -> str:
    return f"{row[0]}:{row[1][:60]}"


@pytest.mark.parametrize(("kubepods", "below", "container"), TABLE, ids=map(_ids, TABLE))
def test_rule(kubepods: str, below: str, container: bool) -> None:
    assert is_container_cgroup(kubepods, below) is container


@pytest.mark.parametrize(("kubepods", "below", "container"), TABLE, ids=map(_ids, TABLE))
def test_identity_names_exactly_the_containers(kubepods: str, below: str, container: bool) -> None:
    """The path parser finds a container ID where the rule says container, and
    only there: the two never disagree on what to report."""
    found = parse(f"/{kubepods}/{below}")
    assert (found is not None and found.container_id is not None) is container


def test_qos_names_follow_the_kubepods_name() -> None:
    assert qos_names("kubepods") == ("besteffort", "burstable")
    assert qos_names("kubepods.slice") == ("kubepods-besteffort.slice", "kubepods-burstable.slice")
    assert qos_names(KIND)[0] == "kubelet-kubepods-besteffort.slice"


DRIVER = r"""
#include <stdio.h>
#include <string.h>
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#include "container.h"
#include "events.h"

int main(void)
{
	char path[MAX_CGROUP_PATH];
	int level;

	/* "<level> <path>" per line; prints 1 or 0 per line */
	while (scanf("%d ", &level) == 1) {
		memset(path, 0, sizeof(path));
		if (!fgets(path, sizeof(path), stdin))
			return 1;
		path[strcspn(path, "\n")] = 0;
		printf("%d\n", is_container_path(path, level));
	}
	return 0;
}
"""


def c_rule(tmp: Path, kubepods_path: str, level: int, kubepods: str) -> Path:
    cc = need_binary("cc", "apt-get install gcc")
    besteffort, burstable = qos_names(kubepods)
    source, binary = tmp / "rule.c", tmp / f"rule-{level}"
    source.write_text(DRIVER)
    subprocess.run(
        [cc, "-Wall", "-Werror", "-Wno-unknown-pragmas", f"-I{BPF_DIR}",
         f'-DKUBEPODS_PATH="{kubepods_path}"', f"-DKUBEPODS_LEVEL={level}",
         f'-DQOS_BESTEFFORT="{besteffort}/"', f'-DQOS_BURSTABLE="{burstable}/"',
         "-o", str(binary), str(source)],
        check=True,
    )
    return binary


def run_c(binary: Path, rows: list[tuple[int, str]]) -> list[bool]:
    text = "".join(f"{level} {path}\n" for level, path in rows)
    out = subprocess.run([str(binary)], input=text, capture_output=True, text=True, check=True)
    return [v == "1" for v in out.stdout.split()]


@pytest.mark.parametrize("node", ["", NODE], ids=["host", "nested"])
@pytest.mark.parametrize("kubepods", [CGROUPFS, SYSTEMD, KIND])
def test_the_bpf_twin_agrees(tmp_path: Path, kubepods: str, node: str) -> None:
    absolute = f"{node}/{kubepods}"
    level = absolute.count("/")
    binary = c_rule(tmp_path, absolute, level, kubepods)
    rows = [(kp, below, want) for kp, below, want in TABLE if kp == kubepods]
    inputs = [(level + below.count("/") + 1, f"{absolute}/{below}") for _, below, _ in rows]
    if node and kubepods == KIND:
        assert max(len(p) for _, p in inputs) > 256  # beyond the old buffer
    assert run_c(binary, inputs) == [want for *_, want in rows]
    # kubepods itself, a sibling whose name starts alike, another node's kubepods
    outside = [
        (level, absolute),
        (level + 3, f"{absolute}x/besteffort/pod{UID}/{CID}"),
        (level + 3, f"/other{absolute}/besteffort/pod{UID}/{CID}"[: len(absolute) + 60]),
    ]
    assert run_c(binary, outside) == [False, False, False]
