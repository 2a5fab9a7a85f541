"""Which `go` builds the Kubernetes test binaries, and with which GOTOOLCHAIN."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import k8s_binaries
from harness.k8s_binaries import GoCommand, choose_go, parse_go_version, required_go_version


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("go version go1.23.5 linux/amd64", (1, 23, 5)),
        ("go1.19.8\n", (1, 19, 8)),
        ("go 1.23.0", (1, 23, 0)),
        ("toolchain go1.24.2", (1, 24, 2)),
        ("go1.21", (1, 21, 0)),
        ("devel go1.25-abcdef Tue", (1, 25, 0)),
        ("", None),
        ("golang", None),
    ],
)
def test_parse_go_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_go_version(text) == version


def test_required_version_is_the_go_line(tmp_path: Path) -> None:
    mod = tmp_path / "go.mod"
    mod.write_text("module x\n\ngo 1.23.0\n\nrequire (\n\tk8s.io/api v0.32.13\n)\n")
    assert required_go_version(mod) == (1, 23, 0)


def test_a_toolchain_line_wins_over_the_go_line(tmp_path: Path) -> None:
    mod = tmp_path / "go.mod"
    mod.write_text("module x\n\ngo 1.23.0\n\ntoolchain go1.23.4\n")
    assert required_go_version(mod) == (1, 23, 4)


def test_the_committed_module_has_a_version() -> None:
    assert required_go_version() >= (1, 21, 0)


NEED = (1, 23, 0)


def test_a_new_enough_go_builds_as_it_is() -> None:
    found = [("/usr/local/go/bin/go", (1, 26, 8))]
    assert choose_go(found, NEED) == GoCommand("/usr/local/go/bin/go", (1, 26, 8))


def test_a_new_enough_go_wins_over_one_that_must_fetch_a_toolchain() -> None:
    found = [("/usr/bin/go", (1, 22, 2)), ("/usr/lib/go-1.23/bin/go", (1, 23, 5))]
    assert choose_go(found, NEED) == GoCommand("/usr/lib/go-1.23/bin/go", (1, 23, 5))


def test_go_1_21_or_later_fetches_the_toolchain_through_gotoolchain() -> None:
    found = [("/usr/bin/go", (1, 22, 12))]
    assert choose_go(found, NEED) == GoCommand("/usr/bin/go", (1, 22, 12), toolchain="auto")


def test_go_older_than_1_21_is_not_usable() -> None:
    # Debian 12's golang-go: Go 1.19 knows no GOTOOLCHAIN.
    assert choose_go([("/usr/bin/go", (1, 19, 8)), ("/opt/go", None)], NEED) is None


def test_find_go_says_what_it_found_and_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k8s_binaries, "_go_candidates", lambda: ["/usr/bin/go"])
    monkeypatch.setattr(k8s_binaries, "_go_version", lambda _: (1, 19, 8))
    with pytest.raises(k8s_binaries.PrerequisiteMissing) as err:
        k8s_binaries.find_go()
    message = str(err.value)
    assert "/usr/bin/go is go1.19.8" in message
    assert "scripts/install-go" in message and "bookworm-backports" in message


@pytest.mark.parametrize(
    ("environment", "expected"),
    [(None, "auto"), ("local", "auto"), ("", "auto"), ("go1.23.4", "go1.23.4"), ("path", "path")],
)
def test_build_env_sets_gotoolchain_only_for_an_old_go(
    monkeypatch: pytest.MonkeyPatch, environment: str | None, expected: str
) -> None:
    if environment is None:
        monkeypatch.delenv("GOTOOLCHAIN", raising=False)
    else:
        monkeypatch.setenv("GOTOOLCHAIN", environment)
    env = k8s_binaries._build_env(GoCommand("/usr/bin/go", (1, 22, 12), toolchain="auto"))
    assert env["GOTOOLCHAIN"] == expected
    assert env["CGO_ENABLED"] == "0"


def test_build_env_leaves_gotoolchain_alone_for_a_new_enough_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOTOOLCHAIN", raising=False)
    assert "GOTOOLCHAIN" not in k8s_binaries._build_env(GoCommand("/usr/bin/go", (1, 23, 5)))
