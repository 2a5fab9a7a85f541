"""The edge of discovery: read /proc and the cgroupfs, run the pure checks, and
assemble the report. Nothing here decides anything."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from podtrace_api.nodetracer import CgroupDriver

from .cgroups import (
    cgroup_layout,
    find_kubepods,
    given_kubepods,
    host_namespace,
    no_kubepods,
    pick_kubepods,
)
from .choice import Requested, choose_backend
from .kernel import (
    bcc_facts,
    btf_present,
    check_bcc,
    kernel_release,
    locate_tracefs,
    try_bcc_compile,
)
from .nesting import Nesting, resolve
from .procfs import Mount, cgroup2_path, parse_filesystems, parse_mountinfo, parse_proc_cgroup
from .report import (
    CgroupReport,
    DiscoveryReport,
    KernelReport,
    Problem,
    join_messages,
)
from .tree import FsTree


def discover(
    *,
    cgroupfs: str | None = None,
    kubepods: str | None = None,
    backend: Requested = "auto",
    allow_mount: bool | None = None,
    compile_bcc: bool = False,
    proc: Path = Path("/proc"),
    place: Callable[[str, str, str], Nesting | Problem] = resolve,
) -> DiscoveryReport:
    """Discover the node. allow_mount None: mount tracefs only when root.

    kubepods (relative to the cgroup2 mount) overrides the kubepods cgroup found,
    for layouts discovery does not know or nodes with several.

    compile_bcc also compiles a tiny program (about a second of clang) instead of
    trusting that bcc and headers are present.

    place(cgroup2, tracefs, own cgroup) finds a nested mount's place in the host's
    hierarchy (nesting.resolve; tests pass their own).
    """
    if allow_mount is None:
        allow_mount = os.geteuid() == 0
    mounts = parse_mountinfo((proc / "self/mountinfo").read_text())
    filesystems = parse_filesystems((proc / "filesystems").read_text())
    agent_cgroup = cgroup2_path(parse_proc_cgroup((proc / "self/cgroup").read_text())) or ""

    release = kernel_release()
    tracefs, tracefs_problem = locate_tracefs(mounts, allow_mount)

    def nesting(cgroup2: str) -> Nesting | Problem:
        return place(cgroup2, tracefs, agent_cgroup)

    cgroup, cgroup_problems = discover_cgroups(
        mounts, filesystems, cgroupfs, kubepods, nesting, own_cgroup=agent_cgroup
    )
    kernel = KernelReport(release=release, btf=btf_present(), tracefs=tracefs)

    bcc = check_bcc(release, *bcc_facts(release))
    if bcc.available and compile_bcc:
        bcc = try_bcc_compile()
    chosen = choose_backend(backend, bcc, tracefs)

    problems = [*cgroup_problems]
    if tracefs_problem is not None:
        problems.append(tracefs_problem)
    if chosen.name == "none":
        problems.append(Problem("NoBackend", chosen.reason, fatal=True))
    return DiscoveryReport(
        kernel=kernel,
        cgroup=cgroup,
        bcc=bcc,
        backend=chosen,
        agent_cgroup=agent_cgroup,
        problems=tuple(problems),
    )


def discover_cgroups(
    mounts: list[Mount],
    filesystems: frozenset[str],
    cgroupfs: str | None,
    kubepods: str | None = None,
    nesting: Callable[[str], Nesting | Problem] | None = None,
    own_cgroup: str = "",
) -> tuple[CgroupReport, list[Problem]]:
    """The cgroup part: layout, host namespace, kubepods (reads the cgroup2 tree),
    and, for a mount below the host's root, where it sits (`nesting`, given the
    mount; see nesting.py). Nesting is information, not a problem, once resolved."""
    layout = cgroup_layout(mounts, filesystems, cgroupfs)
    problems = list(layout.problems)
    if layout.cgroup2 is None:
        return CgroupReport(version=layout.version, message=join_messages(problems)), problems

    is_host = host_namespace(os.stat(layout.cgroup2).st_ino)
    tree = FsTree(layout.cgroup2)
    candidates = find_kubepods(tree)
    if kubepods is not None:
        chosen, others, problem = given_kubepods(tree, kubepods, candidates, layout.cgroup2)
    else:
        # The agent's own cgroup (relative to its cgroup2 mount's root, as is every path
        # here) names its node's kubepods when it runs in a pod.
        chosen, others, problem = pick_kubepods(candidates, own_cgroup)
        if chosen is None:
            problem = no_kubepods(layout.cgroup2, is_host, layout.mount_root)
    if problem is not None:
        problems.append(problem)
    root: Nesting | None = Nesting("")
    if not is_host and chosen is not None:
        found = nesting(layout.cgroup2) if nesting else Problem(
            "CgroupNestingUnresolved", "not resolved", fatal=True
        )
        root = found if isinstance(found, Nesting) else None
        if isinstance(found, Problem):
            problems.append(found)
    report = CgroupReport(
        version=layout.version,
        driver=chosen.driver if chosen else CgroupDriver.UNKNOWN,
        root=layout.cgroup2,
        host_namespace=is_host,
        namespace_root=(root.root_path or "/") if chosen and root else "",
        kubepods_path=chosen.path if chosen else "",
        kubepods_id=chosen.cgroup_id if chosen else None,
        kubepods_level=root.level + chosen.level if chosen and root else None,
        other_kubepods=tuple(c.path for c in others),
        message=join_messages(problems),
    )
    return report, problems
