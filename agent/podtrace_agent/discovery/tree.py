"""Read access to a cgroup2 hierarchy, behind a two-method interface so that the
walks over it (finding kubepods, the initial scan) are plain functions; tests
run them over real directories in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class CgroupTree(Protocol):
    """A cgroup hierarchy seen through paths relative to its mount ("" is the root)."""

    def children(self, path: str) -> list[str]:
        """Names of the sub-cgroups of `path`, sorted; [] when it is gone."""
        ...

    def cgroup_id(self, path: str) -> int | None:
        """The cgroup's id (its directory's inode number in cgroup2); None when gone."""
        ...


class FsTree:
    """A CgroupTree over a mounted cgroupfs (or any directory tree)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _abs(self, path: str) -> Path:
        return self.root / path.strip("/") if path.strip("/") else self.root

    def children(self, path: str) -> list[str]:
        try:
            with os.scandir(self._abs(path)) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []  # removed while walking: containers come and go

    def cgroup_id(self, path: str) -> int | None:
        try:
            return os.stat(self._abs(path), follow_symlinks=False).st_ino
        except FileNotFoundError:
            return None
