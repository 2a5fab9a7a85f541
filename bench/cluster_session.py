"""One control plane for the cluster benchmarks (issue 12 parts 5 and 6): the
test tier's real kube-apiserver + etcd with the CRDs, `podtrace-operator` and
`podtrace-agent run` (bcc backend) as host processes, the agent tracing a
private kubepods of this run. Pods are plain API objects bound to the node
with a kubelet-like status (container IDs), and their containers are cgroups
below <kubepods>/besteffort/pod<uid>/<id> made here (no kubelet, no runtime:
the agent names them from the cgroup path and the Pod's status).

The agent's BPF maps are read from outside, as a user would with bpftool: the
map IDs from /proc/<agent>/fdinfo, the `traced` map found by its name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import Hierarchy, cgroup_id

NODE = "bench-node"
NAMESPACE = "bench"


@dataclass
class Container:
    pod: str
    uid: str
    cid: str
    cgroup: Path
    sleeper: subprocess.Popen[bytes] | None = None

    @property
    def cgroup_id(self) -> int:
        return cgroup_id(self.cgroup)


@dataclass
class Session:
    api: Any  # harness.apiserver.LocalAPIServer
    podtrace: Any  # harness.podtrace_procs.Podtrace
    hierarchy: Hierarchy
    containers: list[Container] = field(default_factory=list)
    _traced_fd: int | None = None

    @property
    def agent_pid(self) -> int:
        return int(self.podtrace._procs[1].pid)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return str(self.api.kubectl(*args, input=input).stdout)

    def apply(self, *objs: dict[str, Any]) -> None:
        body = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
        self.kubectl("apply", "-f", "-", input=json.dumps(body))

    def pods(self, count: int, labels: dict[str, str], sleeper: bool = False) -> list[Container]:
        """`count` running Pods with one container `main` each, their cgroups made
        (with a sleeping process in each when asked)."""
        first = len(self.containers)
        names = [f"p{first + i}" for i in range(count)]
        cids = {name: uuid.uuid4().hex * 2 for name in names}
        self.apply(*({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": n, "namespace": NAMESPACE, "labels": labels},
                      "spec": {"nodeName": NODE,
                               "containers": [{"name": "main", "image": "busybox"}]}}
                     for n in names))  # fmt: skip

        def running(name: str) -> Container:
            status = {"phase": "Running", "containerStatuses": [{
                "name": "main", "containerID": f"containerd://{cids[name]}", "image": "busybox",
                "imageID": "", "ready": True, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}  # fmt: skip
            out = self.kubectl("patch", "pod", name, "-n", NAMESPACE, "--subresource=status",
                               "--type=merge", "-p", json.dumps({"status": status}),
                               "-o", "jsonpath={.metadata.uid}")  # fmt: skip
            cgroup = self.hierarchy.container(out.strip(), cids[name])
            proc = None
            if sleeper:
                proc = subprocess.Popen(["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs; "
                                         "exec sleep 3600"])  # fmt: skip
            return Container(name, out.strip(), cids[name], cgroup, proc)

        with ThreadPoolExecutor(4) as pool:
            made = list(pool.map(running, names))
        self.containers += made
        return made

    # -- the agent's BPF map `traced` ---------------------------------------

    def traced_fd(self) -> int:
        """A descriptor of the agent's `traced` map (found once)."""
        if self._traced_fd is None:
            from bcc.libbcc import lib

            lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
            lib.bpf_map_get_fd_by_id.restype = ctypes.c_int
            for info in Path(f"/proc/{self.agent_pid}/fdinfo").iterdir():
                with contextlib.suppress(OSError):
                    fields = dict(line.split(":\t", 1) for line in info.read_text().splitlines()
                                  if ":\t" in line)  # fmt: skip
                    if fields.get("map_type") != "1" or fields.get("key_size") != "8":
                        continue
                    shown = subprocess.run(["bpftool", "-j", "map", "show", "id",
                                            fields["map_id"]], capture_output=True, text=True)
                    if json.loads(shown.stdout or "{}").get("name") == "traced":
                        self._traced_fd = lib.bpf_map_get_fd_by_id(int(fields["map_id"]))
                        break
            if self._traced_fd is None or self._traced_fd < 0:
                raise RuntimeError("the agent's `traced` BPF map was not found")
        return self._traced_fd

    def in_map(self, cgroup: int) -> int | None:
        """The probe mask of `cgroup` in the agent's `traced` map, None when absent."""
        from bcc.libbcc import lib

        from podtrace_agent.bpf.wire import TracedCgroup

        value = TracedCgroup()
        key = ctypes.c_uint64(cgroup)
        if lib.bpf_lookup_elem(self.traced_fd(), ctypes.byref(key), ctypes.byref(value)) < 0:
            return None
        return int(value.mask)

    def close(self) -> None:
        for c in self.containers:
            if c.sleeper is not None:
                c.sleeper.kill()
                c.sleeper.wait()
        if self._traced_fd is not None and self._traced_fd >= 0:
            import os

            os.close(self._traced_fd)


@contextlib.contextmanager
def session() -> Iterator[Session]:
    from harness.apiserver import LocalAPIServer
    from harness.k8s_binaries import ensure_binaries
    from harness.podtrace_procs import Podtrace, install_crds

    binaries = ensure_binaries(kubelet=False)
    with LocalAPIServer(binaries) as api, Hierarchy() as h:
        install_crds(binaries.kubectl, api.kubeconfig)
        h.kubepods()
        api.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))
        api.ensure_service_account(NAMESPACE)  # no controller-manager makes it
        workdir = Path(tempfile.mkdtemp(prefix="podtrace-bench-cluster-"))
        pt = Podtrace(api.kubeconfig, node=NODE, workdir=workdir, backend="bcc",
                      cri_endpoint="unix:///nonexistent/podtrace-bench.sock",
                      kubepods=h.kubepods_rel, status_interval="1s")  # fmt: skip
        s = Session(api, pt, h)
        with pt:
            try:
                pt.wait_agent_ready(binaries.kubectl)
                yield s
            finally:
                s.close()
