"""Admission on the real apiserver: the generated CRDs accept the examples and
reject each invalid object of the corpus with a message that names the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from limits_table import BOUNDS, Bound

REPO = Path(__file__).resolve().parents[2]
CORPUS = yaml.safe_load((Path(__file__).parent / "admission" / "invalid.yaml").read_text())
KINDS = {"tp": ("TracingPolicy", None), "ct": ("ContainerTrace", "default")}

# Placeholders that keep oversized cases readable in the corpus file.
_EXPANSIONS: dict[str, Any] = {
    "__MANY_SYSCALLS__": [f"call{i}" for i in range(129)],
    "__LONG_MESSAGE__": "x" * 1025,
    "__MANY_EXPRESSIONS__": [{"key": f"k{i}", "operator": "Exists"} for i in range(33)],
}


def _expand(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v) for k, v in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            expanded = _expand(item)
            if isinstance(item, str) and isinstance(expanded, list):
                out.extend(expanded)
            else:
                out.append(expanded)
        return out
    return _EXPANSIONS.get(node, node) if isinstance(node, str) else node


def _manifest(case: dict[str, Any]) -> dict[str, Any]:
    kind, namespace = KINDS[case["kind"]]
    metadata = {"name": case["case"]}
    if namespace:
        metadata["namespace"] = namespace
    obj: dict[str, Any] = {"apiVersion": "podtrace.io/v1alpha1", "kind": kind, "metadata": metadata}
    if case["spec"] is not None:
        obj["spec"] = _expand(case["spec"])
    return obj


def test_corpus_is_large_and_unique() -> None:
    names = [c["case"] for c in CORPUS]
    assert len(names) >= 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CORPUS, ids=[c["case"] for c in CORPUS])
def test_invalid_object_is_rejected_naming_the_field(apiserver, crds_installed, case) -> None:
    result = apiserver.kubectl("create", "-f", "-", input=json.dumps(_manifest(case)), check=False)
    assert result.returncode != 0, f"accepted an invalid object: {case['case']}"
    assert "is invalid" in result.stderr or "strict decoding error" in result.stderr, result.stderr
    assert case["field"] in result.stderr, result.stderr


def _bound_object(bound: Bound, spec: dict[str, Any], suffix: str) -> str:
    kind, namespace = KINDS[bound.kind]
    metadata = {"name": f"{bound.name}-{suffix}"}
    if namespace:
        metadata["namespace"] = namespace
    return json.dumps({"apiVersion": "podtrace.io/v1alpha1", "kind": kind,
                       "metadata": metadata, "spec": spec})


@pytest.mark.parametrize("bound", BOUNDS, ids=[b.name for b in BOUNDS])
def test_kernel_bounds_admit_at_and_reject_past(apiserver, crds_installed, bound: Bound) -> None:
    """tests/kernel/test_limits_kernel.py traces the same objects at the bound."""
    at = apiserver.kubectl("create", "--dry-run=server", "-f", "-",
                           input=_bound_object(bound, bound.at, "at"), check=False)
    assert at.returncode == 0, at.stderr
    past = apiserver.kubectl("create", "--dry-run=server", "-f", "-",
                             input=_bound_object(bound, bound.past, "past"), check=False)
    assert past.returncode != 0, f"admitted past the bound: {bound.name}"
    assert bound.field in past.stderr, past.stderr


def test_examples_are_accepted(apiserver, crds_installed) -> None:
    result = apiserver.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "examples"))
    assert result.stdout.count("serverside-applied") == len(
        list((REPO / "manifests" / "examples").glob("*.yaml"))
    )
    again = apiserver.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "examples"))
    assert again.returncode == 0


def test_defaults_are_applied(apiserver, crds_installed) -> None:
    apiserver.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "examples"))
    ct = json.loads(apiserver.kubectl("get", "ct", "checkout-record", "-n", "default",
                                      "-o", "json").stdout)
    assert ct["spec"]["observe"]["syscalls"]["mode"] == "All"
    assert ct["spec"]["observe"]["processes"] == {"exec": True, "exit": False}


def test_printer_columns_and_category(apiserver, crds_installed) -> None:
    apiserver.kubectl("apply", "--server-side", "-f", str(REPO / "manifests" / "examples"))
    apiserver.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({
        "apiVersion": "podtrace.io/v1alpha1", "kind": "NodeTracer",
        "metadata": {"name": "node-a"}, "spec": {},
    }))
    status = {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Tracing",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "backend": {"name": "bcc"}, "runtime": {"name": "containerd"},
        "cgroup": {"version": "hybrid"}, "tracedContainers": 3, "eventsDropped": 7,
    }}
    apiserver.kubectl("patch", "nt", "node-a", "--subresource=status", "--type=merge",
                      "-p", json.dumps(status))
    lines = apiserver.kubectl("get", "tp,ct,nt", "-A").stdout
    for header in ("VALID", "NODES", "CONTAINERS", "PHASE", "TARGETS", "SYSCALLS", "EXECS",
                   "READY", "BACKEND", "RUNTIME", "CGROUP", "TRACED", "DROPPED"):
        assert header in lines
    row = next(line for line in lines.splitlines() if "nodetracer.podtrace.io/node-a" in line)
    assert row.split()[1:7] == ["True", "bcc", "containerd", "hybrid", "3", "7"]
    everything = apiserver.kubectl("get", "podtrace", "-A").stdout
    for name in ("web-shells", "backend-hardening", "checkout-record", "node-a"):
        assert name in everything


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("containertrace.spec", "Which of this namespace's pods to trace"),
        ("containertrace.spec.duration", "How long to trace"),
        ("tracingpolicy.spec.rules", "Rules that raise Events"),
        ("nodetracer.status.cgroup", "How the node's cgroups are laid out"),
    ],
)
def test_explain_reads_well(apiserver, crds_installed, resource: str, expected: str) -> None:
    text = " ".join(apiserver.kubectl("explain", resource).stdout.split())  # kubectl wraps lines
    assert expected in text
