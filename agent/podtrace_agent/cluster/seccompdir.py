"""The kubelet's seccomp directory: the profiles of ContainerTraces with
`seccompProfile.install: true`, written where pods find them as Localhost profiles
(`podtrace_api.seccompinstall` holds the contract with the operator).

`wanted` reads the install ConfigMaps into what to write (pure: it checks every file
name and profile, so that nothing a ConfigMap holds can write outside
`<dir>/podtrace` or leave a file the runtime cannot parse); `SeccompDir.sync` makes
the directory hold exactly that and says per trace what it holds. Files are replaced
by rename, so the kubelet and the runtime read either the old profile or the new one,
never half of one. The podtrace subdirectory is podtrace's alone: what is in it and not
wanted is removed (a trace deleted while the agent was down included).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podtrace_api.nodetracer import MAX_INSTALL_FAILURES, InstallFailure, SeccompInstallStatus
from podtrace_api.seccompinstall import (
    MAX_PROFILE_BYTES,
    SUBDIR,
    TRACE_ANNOTATION,
    TRACE_UID_ANNOTATION,
    digest,
    valid_file_name,
)

log = logging.getLogger(__name__)
MAX_INSTALLED = 96  # NodeTracer status.seccompProfiles.installed maxItems
TEMP_PREFIX = ".podtrace-"  # files being written (never a valid profile name)


@dataclass(frozen=True)
class TraceProfiles:
    """What one install ConfigMap asks this node to hold."""

    uid: str
    trace: str  # <namespace>/<name>
    files: dict[str, str]  # file name → profile JSON
    problems: tuple[str, ...] = ()  # keys refused, and why


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
    """Per install ConfigMap (by name): the files to write. A file name already taken
    by a ConfigMap earlier by name is refused (the operator never hands one name to two
    traces; this keeps a mistake from flipping a file between two profiles).

    >>> cm = {"metadata": {"name": "seccomp.a.t", "annotations": {
    ...     "podtrace.io/trace": "a/t", "podtrace.io/trace-uid": "u1"}},
    ...     "data": {"a-t-c.json": '{"defaultAction": "SCMP_ACT_ERRNO"}', "../x": "{}"}}
    >>> [(w.trace, list(w.files), w.problems) for w in wanted([cm])]
    [('a/t', ['a-t-c.json'], ("'../x' is not a profile file name",))]
    """
    out: list[TraceProfiles] = []
    taken: dict[str, str] = {}
    for cm in sorted(config_maps, key=lambda c: c["metadata"]["name"]):
        meta = cm["metadata"]
        notes = meta.get("annotations") or {}
        uid = str(notes.get(TRACE_UID_ANNOTATION) or meta.get("uid") or "")
        trace = str(notes.get(TRACE_ANNOTATION) or meta["name"])
        files: dict[str, str] = {}
        problems: list[str] = []
        for name, text in sorted((cm.get("data") or {}).items()):
            why = _problem_of(name, text)
            if why is None and name in taken:
                why = f"{name}: also asked for by trace {taken[name]}"
            if why is not None:
                problems.append(why)
                continue
            files[name] = text
            taken[name] = trace
        out.append(TraceProfiles(uid, trace, files, tuple(problems)))
    return out


@dataclass
class SeccompDir:
    """`<directory>/podtrace` as this agent keeps it."""

    directory: Path
    written: dict[str, str] = field(default_factory=dict)  # file name → content on disk

    @property
    def subdir(self) -> Path:
        return self.directory / SUBDIR

    def sync(self, traces: list[TraceProfiles]) -> SeccompInstallStatus:
        """Write what `traces` ask, remove the rest; what the directory holds now."""
        failed: dict[str, str] = {}
        try:
            self.subdir.mkdir(mode=0o755, parents=True, exist_ok=True)
            on_disk = {p.name for p in self.subdir.iterdir()}
        except OSError as err:
            return self._status(traces, {t.uid: str(err) for t in traces}, str(err))
        keep = {name for t in traces for name in t.files}
        for name in sorted(on_disk - keep):
            try:
                path = self.subdir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                log.info("seccomp profile %s removed", path)
            except OSError as err:
                log.warning("seccomp profile %s not removed: %s", name, err)
            self.written.pop(name, None)
        for trace in traces:
            for name, text in trace.files.items():
                if self.written.get(name) == text and name in on_disk:
                    continue
                try:
                    self._write(name, text)
                except OSError as err:
                    failed.setdefault(trace.uid, f"{name}: {err}")
            if trace.problems and trace.uid not in failed:
                failed[trace.uid] = "; ".join(trace.problems)
        return self._status(traces, failed)

    def _write(self, name: str, text: str) -> None:
        path = self.subdir / name
        if path.is_file() and not path.is_symlink() and path.read_text() == text:
            self.written[name] = text  # already there (a restarted agent)
            return
        temp = self.subdir / f"{TEMP_PREFIX}{name}"
        with open(temp, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
        self.written[name] = text
        log.info("seccomp profile %s written", path)

    def _status(self, traces: list[TraceProfiles], failed: Mapping[str, str],
                message: str = "") -> SeccompInstallStatus:  # fmt: skip
        installed = sorted(f"{t.uid}:{digest(t.files)}" for t in traces
                           if t.uid not in failed and t.files)  # fmt: skip
        problems = [InstallFailure(uid=uid, message=why) for uid, why in sorted(failed.items())]
        message = message or (f"{len(installed) - MAX_INSTALLED} more traces' profiles "
                              f"written than listed" if len(installed) > MAX_INSTALLED else "")
        return SeccompInstallStatus(
            directory=str(self.directory), message=message,
            installed=installed[:MAX_INSTALLED], failed=problems[:MAX_INSTALL_FAILURES],
        )  # fmt: skip

    def remove_all(self) -> None:
        """Uninstall: the podtrace subdirectory goes (pods already running keep their
        filter; a new pod that names a removed profile does not start)."""
        shutil.rmtree(self.subdir, ignore_errors=True)
        self.written.clear()


def not_installing(reason: str) -> SeccompInstallStatus:
    """The status of an agent that installs nothing, and why."""
    return SeccompInstallStatus(directory="", message=reason[:128])
