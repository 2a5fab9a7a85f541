"""What the install tier's tests share: the installation they read, and the kernel's
list of BPF programs (to show an uninstall leaves none of ours)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.localcluster import LocalCluster
from harness.podtrace_image import BuiltImage

T = TypeVar("T")
NAMESPACE = "podtrace-system"


def bpf_program_ids() -> set[int]:
    """IDs of every BPF program loaded in the kernel now (bpftool)."""
    done = subprocess.run(
        ["bpftool", "--json", "prog", "show"], capture_output=True, text=True, check=True
    )
    return {int(p["id"]) for p in json.loads(done.stdout or "[]")}


@dataclass
class Installed:
    cluster: LocalCluster
    image: BuiltImage
    overlay: Path
    programs_before: set[int]
    import_seconds: float
    install_seconds: float = 0.0
    uninstalled: bool = False

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        return self.cluster.kubectl(*args, check=check, timeout=timeout).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def maybe(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        done = self.cluster.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def pods(self, selector: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-n", namespace, "-l", selector)["items"])

    def logs(self) -> str:
        """The installed pods' logs (tails), for failure messages."""
        out = []
        for pod in self.pods("app.kubernetes.io/part-of=podtrace"):
            name = pod["metadata"]["name"]
            text = self.kubectl("logs", "-n", NAMESPACE, name, "--tail=25", check=False)
            out.append(f"--- {name} ({pod['status'].get('phase')}) ---\n{text}")
        return "\n" + "\n".join(out)

    def wait_for(
        self, what: str, fn: Callable[[], T | None], timeout: float = 180.0,
        show: Callable[[], Any] | None = None,
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            got = fn()
            if got:
                return got
            if time.monotonic() > deadline:
                shown = show() if show is not None else None
                pytest.fail(f"{what}: not after {timeout:.0f}s; last seen: "
                            f"{json.dumps(shown, indent=1, default=str)}{self.logs()}")
            time.sleep(0.5)
