"""Seccomp profiles installed on the nodes (ContainerTrace `seccompProfile.install`). Pure.

The operator publishes a trace's profiles in one ConfigMap of its own namespace
(`podtrace_api.seccompinstall` holds the contract), every node's agent writes them
into its kubelet's seccomp directory and reports which version it holds, and this
module says what goes in that ConfigMap and what the trace's status shows:

- `Claims`: which trace holds which file name. The name `<namespace>-<trace>-<container>
  .json` is what users expect but two tenants' names can meet (`a-b`/`c` and `a`/`b-c`),
  so a name belongs to the first trace that claims it until that trace lets go; the
  other is refused (condition ProfileInstalled False, reason NameTaken) and never
  overwrites it. At most `MAX_INSTALLED_TRACES` traces hold names: every node reports
  each of them.
- `install_files`: the ConfigMap's data from the trace's profiles.
- `with_install`: the status with each container's `localhostProfile`, the nodes that
  hold the current version, the ones that do not and why, and the condition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    """File name → the trace holding it."""

    limit: int = MAX_INSTALLED_TRACES
    holders: dict[str, Holder] = field(default_factory=dict)

    def claim(self, holder: Holder, names: Iterable[str]) -> tuple[set[str], str]:
        """Give `holder` the `names` that are free or its own (and let go of its others);
        returns those it holds and why it holds none or not all ("" when it does)."""
        names = set(names)
        mine = {n for n, h in self.holders.items() if h.uid == holder.uid}
        owners = {h.uid for h in self.holders.values()}
        if not mine and holder.uid not in owners and len(owners) >= self.limit and names:
            return set(), (f"{TOO_MANY}: {self.limit} traces' profiles are installed "
                           f"already, the most every node reports")
        for name in mine - names:
            del self.holders[name]
        taken = {n: self.holders[n] for n in names if n in self.holders
                 and self.holders[n].uid != holder.uid}  # fmt: skip
        for name in names - set(taken):
            self.holders[name] = holder
        why = "; ".join(f"{NAME_TAKEN}: {n} is held by trace {h.trace} (rename this trace "
                        f"or that one)" for n, h in sorted(taken.items()))  # fmt: skip
        return names - set(taken), why

    def release(self, uid: str) -> None:
        for name in [n for n, h in self.holders.items() if h.uid == uid]:
            del self.holders[name]


def install_files(namespace: str, trace: str, profiles: Mapping[str, str]) -> dict[str, str]:
    """The install ConfigMap's data (file name → profile JSON) from the trace's ConfigMap
    data (`<container>.json` → profile JSON).

    >>> install_files("shop", "rec", {"web.json": "{}"})
    {'shop-rec-web.json': '{}'}
    """
    return {file_name(namespace, trace, container_of(key)): text
            for key, text in sorted(profiles.items())}  # fmt: skip


@dataclass(frozen=True)
class InstallPlan:
    """What a trace asks to install, and what it may."""

    files: Mapping[str, str]  # file name → JSON, every container's
    granted: frozenset[str]  # the file names this trace holds
    refused: str = ""  # why not all (NAME_TAKEN or TOO_MANY: message)

    @property
    def published(self) -> dict[str, str]:
        """What the install ConfigMap holds: the files of the names held."""
        return {n: t for n, t in self.files.items() if n in self.granted}

    @property
    def version(self) -> str:
        return digest(self.published)


def _node_problem(report: NodeReport, uid: str, version: str) -> str | None:
    """Why `report`'s node does not hold `version` of trace `uid` (None: it does)."""
    installs = report.installs
    if installs is None:
        return "its agent reports no installed profiles (an agent older than this operator?)"
    if not installs.directory:
        return installs.message or "its agent runs without --seccomp-dir"
    if f"{uid}:{version}" in installs.installed:
        return None
    failed = next((f.message for f in installs.failed if f.uid == uid), None)
    if failed:
        return failed
    return installs.message or "not written yet"


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
    publish_error: str = "",
) -> ContainerTraceStatus:
    """`status` with the install's part set (`plan` None: no install asked; it goes;
    `publish_error`: why the install ConfigMap could not be written)."""
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
    problems = {node: _node_problem(r, uid, version) for node, r in sorted(reports.items())}
    have = [node for node, why in problems.items() if why is None]
    missing = [NodeInstallProblem(node=node, message=why)
               for node, why in problems.items() if why is not None]  # fmt: skip
    containers = []
    for c in profile.containers:
        name = file_name(namespace, trace, c.container)
        held = localhost_profile(name) if name in plan.granted else None
        containers.append(c.model_copy(update={"localhost_profile": held}))
    installed = ProfileInstall(nodes=have[:MAX_INSTALLED_NODES], installed_nodes=len(have),
                               total_nodes=len(problems),
                               missing=missing[:MAX_INSTALL_PROBLEMS])  # fmt: skip
    where = f"on {len(have)} of {len(problems)} nodes"
    if publish_error:
        ok, reason, message = False, INSTALL_FAILED, publish_error
    elif plan.refused:
        reason, _, message = plan.refused.partition(": ")
        ok, message = False, f"{message} (installed {where})"
    elif not plan.granted:
        ok, reason, message = False, INSTALLING, "no profile yet: nothing was recorded"
    elif missing:
        failed = [m for m in missing if m.message != "not written yet"]
        reason = INSTALL_FAILED if failed else INSTALLING
        first = (failed or missing)[0]
        ok, message = False, f"installed {where}; {first.node}: {first.message}"
    elif not problems:
        ok, reason, message = False, INSTALLING, "no node has a podtrace agent yet"
    else:
        ok, reason = True, INSTALLED
        message = f"installed {where}, for pods to use as localhostProfile " + ", ".join(
            c.localhost_profile or "" for c in containers if c.localhost_profile)
    conditions = set_condition(conditions, PROFILE_INSTALLED, ok, reason, message, now,
                               generation)  # fmt: skip
    profile = profile.model_copy(update={"installed": installed, "containers": containers})
    return status.model_copy(update={"conditions": conditions, "seccomp_profile": profile})
