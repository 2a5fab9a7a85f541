"""The kubelet's seccomp directory: the profiles of ContainerTraces with
`seccompProfile.install: true`, written where pods find them as Localhost profiles
(`podtrace_api.seccompinstall` holds the contract with the operator).

`wanted` reads the install ConfigMaps into what to write (pure: it checks every file
name, namespace and profile, so that nothing a ConfigMap holds can write outside
`<dir>/podtrace/<namespace>/`, leave a file the runtime cannot parse, or stop the
agent); `SeccompDir.sync` makes the directory hold exactly that and says per trace
what it holds. Files are replaced by rename, so the kubelet and the runtime read either
the old profile or the new one, never half of one. The podtrace subdirectory is
podtrace's alone: what is in it and not wanted is removed (a trace deleted while the
agent was down included).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podtrace_api.budget import MAX_INSTALLED_TRACES
from podtrace_api.nodetracer import MAX_INSTALL_FAILURES, InstallFailure, SeccompInstallStatus
from podtrace_api.seccompinstall import (
    MAX_PROFILE_BYTES,
    SUBDIR,
    TRACE_ANNOTATION,
    TRACE_UID_ANNOTATION,
    digest,
    valid_file_name,
    valid_namespace,
)

log = logging.getLogger(__name__)
TEMP_PREFIX = ".podtrace-"  # files being written (never a valid profile name)
_UID = re.compile(r"^[A-Za-z0-9-]{1,36}$")


@dataclass(frozen=True)
class TraceProfiles:
    """What one install ConfigMap asks this node to hold."""

    uid: str
    trace: str  # <namespace>/<name>
    files: dict[str, str]  # <namespace>/<file name> → profile JSON
    problems: tuple[str, ...] = ()  # keys refused, and why
    version: str = ""  # the digest of the ConfigMap's data, as the operator computes it


def _problem_of(name: str, text: str) -> str | None:
    """Why a ConfigMap key and value cannot be written as a profile file, if not."""
    if not valid_file_name(name):
        return f"{name[:40]!r} is not a profile file name"
    if len(text.encode()) > MAX_PROFILE_BYTES:
        return f"{name}: larger than {MAX_PROFILE_BYTES} bytes"
    try:
        profile = json.loads(text)
    except ValueError as err:
        return f"{name}: not JSON ({err})"
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        return f"{name}: not a seccomp profile (no defaultAction)"
    return None


def wanted(config_maps: Iterable[Mapping[str, Any]]) -> list[TraceProfiles]:
    """Per install ConfigMap (by name): the files to write. A ConfigMap that does not
    name its trace as the operator does is skipped whole (logged); a path already
    taken by a ConfigMap earlier by name is refused (the operator never hands one path
    to two traces; this keeps a mistake from flipping a file between two profiles).

    >>> cm = {"metadata": {"name": "seccomp.a.t", "annotations": {
    ...     "podtrace.io/trace": "a/t", "podtrace.io/trace-uid": "u1"}},
    ...     "data": {"t-c.json": '{"defaultAction": "SCMP_ACT_ERRNO"}', "../x": "{}"}}
    >>> [(w.trace, list(w.files), w.problems) for w in wanted([cm])]
    [('a/t', ['a/t-c.json'], ("'../x' is not a profile file name",))]
    """
    out: list[TraceProfiles] = []
    taken: dict[str, str] = {}
    for cm in sorted(config_maps, key=lambda c: str(c["metadata"]["name"])):
        meta = cm["metadata"]
        notes = meta.get("annotations") or {}
        uid, trace = str(notes.get(TRACE_UID_ANNOTATION, "")), str(notes.get(TRACE_ANNOTATION, ""))
        namespace = trace.partition("/")[0]
        if not _UID.match(uid) or not valid_namespace(namespace):
            log.warning("ConfigMap %s: not an install ConfigMap of podtrace-operator (trace %r, "
                        "uid %r): skipped", meta["name"], trace[:80], uid[:40])  # fmt: skip
            continue
        files: dict[str, str] = {}
        problems: list[str] = []
        for name, text in sorted((cm.get("data") or {}).items()):
            path = f"{namespace}/{name}"
            why = _problem_of(name, text)
            if why is None and path in taken:
                why = f"{path}: also asked for by trace {taken[path]}"
            if why is not None:
                problems.append(why)
                continue
            files[path] = text
            taken[path] = trace
        out.append(TraceProfiles(uid, trace, files, tuple(problems),
                                 digest(dict(cm.get("data") or {}))))
    return out


@dataclass
class SeccompDir:
    """`<directory>/podtrace` as this agent keeps it."""

    directory: Path
    written: dict[str, str] = field(default_factory=dict)  # relative path → content on disk

    @property
    def subdir(self) -> Path:
        return self.directory / SUBDIR

    def _on_disk(self) -> set[str]:
        """Every entry below the subdirectory, relative: namespace dirs' files, and any
        other entry as itself (none is podtrace's but the files it writes)."""
        found = set()
        for entry in self.subdir.iterdir():
            if entry.is_dir() and not entry.is_symlink() and valid_namespace(entry.name):
                found |= {f"{entry.name}/{f.name}" for f in entry.iterdir()}
            else:
                found.add(entry.name)
        return found

    def sync(self, traces: list[TraceProfiles]) -> SeccompInstallStatus:
        """Write what `traces` ask, remove the rest; what the directory holds now."""
        failed: dict[str, str] = {}
        try:
            self.subdir.mkdir(mode=0o755, parents=True, exist_ok=True)
            on_disk = self._on_disk()
        except OSError as err:
            return self._status(traces, {t.uid: str(err) for t in traces}, str(err))
        keep = {path for t in traces for path in t.files}
        for path in sorted(on_disk - keep):
            self._remove(self.subdir / path)
            self.written.pop(path, None)
        for directory in self.subdir.iterdir():  # namespaces left with no profile
            if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
                self._remove(directory)
        for trace in traces:
            for path, text in trace.files.items():
                if self.written.get(path) == text and path in on_disk:
                    continue
                try:
                    self._write(path, text)
                except OSError as err:
                    failed.setdefault(trace.uid, f"{err.strerror or err}: {path}")
            if trace.problems and trace.uid not in failed:
                failed[trace.uid] = "; ".join(trace.problems)
        return self._status(traces, failed)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            log.info("seccomp profile %s removed", path)
        except OSError as err:
            log.warning("seccomp profile %s not removed: %s", path, err)

    def _write(self, path: str, text: str) -> None:
        target = self.subdir / path
        target.parent.mkdir(mode=0o755, exist_ok=True)
        data = text.encode()
        if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
            self.written[path] = text  # already there (a restarted agent)
            return
        temp = target.parent / f"{TEMP_PREFIX}{target.name}"
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
        self.written[path] = text
        log.info("seccomp profile %s written", target)

    def _status(self, traces: list[TraceProfiles], failed: Mapping[str, str],
                message: str = "") -> SeccompInstallStatus:  # fmt: skip
        installed = sorted(f"{t.uid}:{t.version}" for t in traces
                           if t.uid not in failed and t.files and t.version)  # fmt: skip
        problems = [InstallFailure(uid=uid, message=why) for uid, why in sorted(failed.items())]
        if not message and len(installed) > MAX_INSTALLED_TRACES:
            message = f"{len(installed) - MAX_INSTALLED_TRACES} traces' profiles not listed"
        return SeccompInstallStatus(
            directory=str(self.directory), message=message,
            installed=installed[:MAX_INSTALLED_TRACES], failed=problems[:MAX_INSTALL_FAILURES],
        )  # fmt: skip

    def remove_all(self) -> None:
        """Uninstall: the podtrace subdirectory goes (pods already running keep their
        filter; a new pod that names a removed profile does not start)."""
        shutil.rmtree(self.subdir, ignore_errors=True)
        self.written.clear()


def not_installing(reason: str) -> SeccompInstallStatus:
    """The status of an agent that installs nothing, and why."""
    return SeccompInstallStatus(directory="", message=reason[:128])
