"""Seccomp profiles installed on the nodes (ContainerTrace `seccompProfile.install`). Pure.

The operator publishes a trace's profiles in one ConfigMap of its own namespace
(`podtrace_api.seccompinstall` holds the contract), every node's agent writes them
into its kubelet's seccomp directory and reports which version it holds, and this
module says what goes in that ConfigMap and what the trace's status shows:

- `Claims`: which trace holds which path. A path is `<namespace>/<trace>-<container>.json`:
  another namespace's traces can never make it, but in one namespace trace `a-b`,
  container `c` and trace `a`, container `b-c` meet, so a path belongs to the first
  trace that claims it until that trace lets go; the other is refused (condition
  ProfileInstalled False, reason NameTaken) and never overwrites it. At most
  `MAX_INSTALLED_TRACES` traces hold paths (every node reports each of them), and at
  most `MAX_PER_NAMESPACE` of one namespace, so one tenant cannot take every slot.
- `install_files`: the ConfigMap's data from the trace's profiles.
- `with_install`: the status with each container's `localhostProfile`, the nodes that
  hold the current version, the ones that do not and why, and the condition.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from podtrace_api.budget import MAX_INSTALLED_TRACES
from podtrace_api.conditions import set_condition
from podtrace_api.containertrace import (
    MAX_INSTALL_PROBLEMS,
    MAX_INSTALLED_NODES,
    ContainerTraceStatus,
    NodeInstallProblem,
    ProfileInstall,
)
from podtrace_api.seccompinstall import digest, file_name, localhost_profile

from .reports import NodeReport
from .spo import container_of

MAX_PER_NAMESPACE = 16
PROFILE_INSTALLED = "ProfileInstalled"
NAME_TAKEN = "NameTaken"
TOO_MANY = "TooManyInstalled"
INSTALL_FAILED = "InstallFailed"
INSTALLING = "Installing"
INSTALLED = "Installed"


@dataclass(frozen=True)
class Holder:
    uid: str
    trace: str  # <namespace>/<name>


@dataclass
class Claims:
    """Path (`<namespace>/<file name>`) → the trace holding it."""

    limit: int = MAX_INSTALLED_TRACES
    per_namespace: int = MAX_PER_NAMESPACE
    holders: dict[str, Holder] = field(default_factory=dict)

    def claim(self, holder: Holder, names: Iterable[str]) -> tuple[set[str], str]:
        """Give `holder` the file `names` (in its namespace) that are free or its own, and
        let go of its others; returns the names it holds and why it holds none or not
        all ("" when it does)."""
        namespace = holder.trace.partition("/")[0]
        wanted = {f"{namespace}/{n}": n for n in names}
        mine = {p for p, h in self.holders.items() if h.uid == holder.uid}
        owners = {h.uid: h for h in self.holders.values()}
        if not mine and wanted:
            if len(owners) >= self.limit:
                return set(), (f"{TOO_MANY}: {self.limit} traces' profiles are installed "
                               f"already, the most every node reports")
            if sum(h.trace.startswith(f"{namespace}/") for h in owners.values()) >= \
                    self.per_namespace:
                return set(), (f"{TOO_MANY}: {self.per_namespace} traces of namespace "
                               f"{namespace} install profiles already, the most one may")
        names = set(wanted)
        for name in mine - names:
            del self.holders[name]
        taken = {n: self.holders[n] for n in names if n in self.holders
                 and self.holders[n].uid != holder.uid}  # fmt: skip
        for name in names - set(taken):
            self.holders[name] = holder
        why = "; ".join(f"{NAME_TAKEN}: {n} is held by trace {h.trace} (rename this trace "
                        f"or that one)" for n, h in sorted(taken.items()))  # fmt: skip
        return {wanted[p] for p in names - set(taken)}, why

    def release(self, uid: str) -> None:
        for name in [n for n, h in self.holders.items() if h.uid == uid]:
            del self.holders[name]


def install_files(trace: str, profiles: Mapping[str, str]) -> dict[str, str]:
    """The install ConfigMap's data (file name → profile JSON) from the trace's ConfigMap
    data (`<container>.json` → profile JSON).

    >>> install_files("rec", {"web.json": "{}"})
    {'rec-web.json': '{}'}
    """
    return {file_name(trace, container_of(key)): text for key, text in sorted(profiles.items())}


@dataclass(frozen=True)
class InstallPlan:
    """What a trace asks to install, and what it may."""

    files: Mapping[str, str]  # file name → JSON, every container's
    granted: frozenset[str]  # the file names this trace holds (in its namespace)
    refused: str = ""  # why not all (NAME_TAKEN or TOO_MANY: message)

    @property
    def published(self) -> dict[str, str]:
        """What the install ConfigMap holds: the files of the names held."""
        return {n: t for n, t in self.files.items() if n in self.granted}

    @property
    def version(self) -> str:
        return digest(self.published)


def _node_state(report: NodeReport, uid: str, version: str, silent: bool) -> tuple[str, str]:
    """What `report`'s node holds of trace `uid`: ("current", ""), ("older", ""),
    ("missing", why) while it may still come, or ("failed", why)."""
    installs = report.installs
    if report.heartbeat is None:
        return "missing", "no report from its agent yet"
    if silent:
        return "failed", "its agent sends no heartbeat: not known"
    if installs is None:
        return "failed", "its agent reports no installed profiles (older than the operator?)"
    if not installs.directory:
        return "failed", installs.message or "its agent runs without --seccomp-dir"
    if f"{uid}:{version}" in installs.installed:
        return "current", ""
    failed = next((f.message for f in installs.failed if f.uid == uid), None)
    if failed:
        return "failed", failed
    if any(v.startswith(f"{uid}:") for v in installs.installed):
        return "older", ""
    if installs.message:  # what keeps the agent from installing (e.g. a 403 on its watch)
        return "failed", installs.message
    return "missing", "not written yet"


def with_install(
    status: ContainerTraceStatus,
    *,
    plan: InstallPlan | None,
    uid: str,
    namespace: str,
    trace: str,
    reports: Mapping[str, NodeReport],
    now: datetime,
    generation: int,
    silent: Collection[str] = (),
    publish_error: str = "",
) -> ContainerTraceStatus:
    """`status` with the install's part set (`plan` None: no install asked; it goes;
    `publish_error`: why the install ConfigMap could not be written; `silent`: nodes
    whose agent sends no heartbeat). ProfileInstalled is True while every node holds a
    version of the profiles (a newer one follows as the trace records more: it does
    not turn False for that), False while some node holds none or failed."""
    conditions = [c for c in status.conditions if c.type != PROFILE_INSTALLED]
    profile = status.seccomp_profile
    if plan is None or profile is None:
        if plan is not None:  # asked for, nothing recorded yet
            conditions = set_condition(conditions, PROFILE_INSTALLED, False, INSTALLING,
                                       "no profile yet: nothing was recorded", now, generation)
        if profile is not None:
            profile = profile.model_copy(update={"installed": None, "containers": [
                c.model_copy(update={"localhost_profile": None}) for c in profile.containers]})
        return status.model_copy(update={"conditions": conditions, "seccomp_profile": profile})
    version = plan.version
    states = {node: _node_state(r, uid, version, node in silent)
              for node, r in sorted(reports.items())}  # fmt: skip
    current = [node for node, (state, _) in states.items() if state == "current"]
    holding = [node for node, (state, _) in states.items() if state in ("current", "older")]
    failed = [NodeInstallProblem(node=node, message=why)
              for node, (state, why) in states.items() if state == "failed"]
    missing = [NodeInstallProblem(node=node, message=why)
               for node, (state, why) in states.items() if state in ("missing", "failed")]
    containers = []
    for c in profile.containers:
        name = file_name(trace, c.container)
        held = localhost_profile(namespace, name) if name in plan.granted else None
        containers.append(c.model_copy(update={"localhost_profile": held}))
    installed = ProfileInstall(nodes=current[:MAX_INSTALLED_NODES], installed_nodes=len(current),
                               total_nodes=len(states),
                               missing=missing[:MAX_INSTALL_PROBLEMS])  # fmt: skip
    where = f"on {len(holding)} of {len(states)} nodes"
    if publish_error:
        ok, reason, message = False, INSTALL_FAILED, publish_error
    elif plan.refused:
        reason, _, message = plan.refused.partition(": ")
        ok, message = False, f"{message} (installed {where})"
    elif not plan.granted:
        ok, reason, message = False, INSTALLING, "no profile yet: nothing was recorded"
    elif missing:
        reason = INSTALL_FAILED if failed else INSTALLING
        first = (failed or missing)[0]
        ok, message = False, f"installed {where}; {first.node}: {first.message}"
    elif not states:
        ok, reason, message = False, INSTALLING, "no node runs podtrace yet"
    else:
        ok, reason = True, INSTALLED
        newest = "" if len(current) == len(states) else \
            f" (the newest version on {len(current)}, the others follow)"
        message = f"installed {where}{newest}, for pods to use as localhostProfile " + \
            ", ".join(c.localhost_profile or "" for c in containers if c.localhost_profile)
    conditions = set_condition(conditions, PROFILE_INSTALLED, ok, reason, message, now,
                               generation)  # fmt: skip
    profile = profile.model_copy(update={"installed": installed, "containers": containers})
    return status.model_copy(update={"conditions": conditions, "seccomp_profile": profile})
