"""rmdir of a directory the kernel may still hold for a moment.

A cgroup stays EBUSY while its last task is leaving or while a child cgroup
removed just before is still being offlined (asynchronously); an ftrace
instance stays EBUSY while a reader that just closed its trace_pipe lets go.
The directory becomes removable on its own a moment later, so removal is
retried until a deadline. Written by hand: the standard library has no retried
rmdir, and what this needs (a deadline, which errnos count as busy, an action
between attempts, "already gone" as success) is a dozen lines, less than a
retry library's set-up would take.

    rmdir_retrying(instance_dir, timeout=2.0, interval=0.05, busy={errno.EBUSY})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from pathlib import Path


def rmdir_retrying(
    path: Path,
    *,
    timeout: float,
    interval: float,
    busy: Collection[int] | None = None,
    between: Callable[[Path], object] | None = None,
) -> None:
    """Remove the directory `path`, retrying while rmdir fails with an errno in
    `busy` (every OSError when None) until `timeout` seconds have passed; then
    the last error is raised. Any other error is raised at once. A directory
    that is gone (ENOENT), before or during, counts as removed. `between(path)`
    runs after each failed attempt, before sleeping `interval` seconds (e.g.
    to kill what is left in a cgroup)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if busy is not None and err.errno not in busy:
                raise
            if time.monotonic() > deadline:
                raise
        if between is not None:
            between(path)
        time.sleep(interval)
