"""Pure behaviour of the API models and the node-config contract."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from podtrace_api.base import parse_duration
from podtrace_api.containertrace import ContainerTrace
from podtrace_api.nodeconfig import Probe, combined_mask, probe_mask, source_id
from podtrace_api.observe import ObserveSpec, Rule
from podtrace_api.tracingpolicy import TracingPolicy
from podtrace_operator.cli import main as cli_main
from podtrace_operator.cli import validate_document

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("250ms", 0.25), ("2h0m1s", 7201)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "-1s", "1d", "1h30"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["h", "m", "s", "ms"])),
                min_size=1, max_size=4))
def test_parse_duration_sums_parts(parts: list[tuple[int, str]]) -> None:
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{n}{u}" for n, u in parts)
    expected = sum(n * unit[u] for n, u in parts)
    assert parse_duration(text).total_seconds() == pytest.approx(expected)


def test_source_ids() -> None:
    assert source_id("TracingPolicy", "a") == "TracingPolicy/a"
    assert source_id("ContainerTrace", "b", "ns") == "ContainerTrace/ns/b"
    with pytest.raises(ValueError, match="namespace"):
        source_id("ContainerTrace", "b")


def test_probe_mask_follows_observe_and_rules() -> None:
    default = ObserveSpec()
    assert probe_mask(default) == Probe.SYSCALLS | Probe.EXEC
    quiet = ObserveSpec.model_validate({"syscalls": {"mode": "None"}, "processes": {"exec": False}})
    assert probe_mask(quiet) == Probe(0)
    rule = Rule.model_validate({"name": "r", "reason": "R", "openPathPrefixes": ["/etc/"]})
    assert probe_mask(quiet, [rule]) == Probe.OPEN
    wide = ObserveSpec.model_validate(
        {"processes": {"exit": True}, "fileOpens": {"pathPrefixes": ["/"]}, "connects": {}}
    )
    assert combined_mask([(quiet, [rule]), (wide, [])]) == Probe(31)


def test_models_serialise_camel_case() -> None:
    ct = ContainerTrace.model_validate(
        {"spec": {"selector": {"matchLabels": {"app": "x"}}, "seccompProfile": {}}}
    )
    wire = ct.to_wire()
    assert wire["spec"]["seccompProfile"] == {"defaultAction": "SCMP_ACT_ERRNO", "install": False}
    assert "match_labels" not in str(wire)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="podSelectr"):
        TracingPolicy.model_validate({"spec": {"selector": {"podSelectr": {}}}})


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert validate_document(doc) == []


def test_validate_names_the_field_and_unknown_syscalls() -> None:
    doc = {
        "apiVersion": "podtrace.io/v1alpha1",
        "kind": "ContainerTrace",
        "spec": {"selector": {}, "duration": "ten minutes"},
    }
    assert validate_document(doc)[0].startswith("spec.duration:")
    doc["spec"] = {"selector": {}, "observe": {"syscalls": {"mode": "Named",
                                                            "names": ["openat", "nosuchcall"]}}}
    assert validate_document(doc) == [
        "spec.observe.syscalls.names: unknown syscall(s) nosuchcall (libseccomp does not know them)"
    ]


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = EXAMPLES / "tracingpolicy-shells.yaml"
    assert cli_main(["validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: podtrace.io/v1alpha1\nkind: TracingPolicy\nmetadata: {name: x}\n"
                   "spec: {rules: [{name: r, reason: lower, execFilenames: [/bin/sh]}]}\n")
    assert cli_main(["validate", str(bad)]) == 1
    assert "spec.rules.0.reason" in capsys.readouterr().out
