"""fsretry.rmdir_retrying on a tmp dir: a non-empty directory stands in for a
busy one (ENOTEMPTY is what it gives, as root too)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from podtrace_agent.fsretry import rmdir_retrying


def _full(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    (d / "child").mkdir(parents=True)
    return d


def test_an_empty_directory_is_removed(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    rmdir_retrying(d, timeout=1.0, interval=0.01)
    assert not d.exists()


def test_an_already_gone_directory_is_fine(tmp_path: Path) -> None:
    rmdir_retrying(tmp_path / "never-made", timeout=1.0, interval=0.01)


def test_retried_until_the_timeout_then_the_last_error_is_raised(tmp_path: Path) -> None:
    d = _full(tmp_path)
    seen: list[Path] = []
    with pytest.raises(OSError) as caught:
        rmdir_retrying(d, timeout=0.05, interval=0.01, between=seen.append)
    assert caught.value.errno == errno.ENOTEMPTY
    assert len(seen) >= 2 and set(seen) == {d}  # retried, with the hook each time
    assert (d / "child").is_dir()


def test_an_errno_not_counted_as_busy_is_raised_at_once(tmp_path: Path) -> None:
    d = _full(tmp_path)
    seen: list[Path] = []
    with pytest.raises(OSError) as caught:
        rmdir_retrying(d, timeout=5.0, interval=0.01, busy={errno.EBUSY}, between=seen.append)
    assert caught.value.errno == errno.ENOTEMPTY and seen == []


def test_removed_once_the_directory_lets_go(tmp_path: Path) -> None:
    d = _full(tmp_path)
    rmdir_retrying(d, timeout=5.0, interval=0.01, busy={errno.ENOTEMPTY},
                   between=lambda p: (p / "child").rmdir())  # fmt: skip
    assert not d.exists()


def test_gone_while_retrying_counts_as_removed(tmp_path: Path) -> None:
    d = _full(tmp_path)

    def someone_else_removes(p: Path) -> None:
        (p / "child").rmdir()
        p.rmdir()

    rmdir_retrying(d, timeout=5.0, interval=0.01, between=someone_else_removes)
    assert not d.exists()
