"""The generated CRDs: reproducible, and every field a user or agent controls is
described and bounded (structural schema rules the apiserver does not enforce
for us)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from podtrace_api import crdgen

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"


def test_committed_crds_match_the_models() -> None:
    wanted = crdgen.files()
    on_disk = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert sorted(on_disk) == sorted(wanted), "crds/ has missing or stale files: run make crds"
    for name, text in wanted.items():
        assert on_disk[name] == text, f"crds/{name} differs from the models: run make crds"


def test_generation_is_deterministic() -> None:
    assert crdgen.files() == crdgen.files()


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    return [(k.KIND, crdgen.crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
            for k in crdgen.KINDS]


@pytest.mark.parametrize(("kind", "schema"), _schemas(), ids=[k.KIND for k in crdgen.KINDS])
def test_every_node_is_typed_described_and_bounded(kind: str, schema: dict[str, Any]) -> None:
    problems = []
    for path, node in _walk(schema, kind):
        if path in (f"{kind}.metadata", f"{kind}.apiVersion", f"{kind}.kind"):  # server-owned
            continue
        if "type" not in node:
            problems.append(f"{path}: no type (not structural)")
        if path.endswith(("[]", "}")):
            pass  # items inherit the description of their list or map
        elif not node.get("description"):
            problems.append(f"{path}: no description (kubectl explain would be empty)")
        kind_ = node.get("type")
        if kind_ == "string" and not ({"maxLength", "enum"} & node.keys()
                                      or node.get("format") == "date-time"):
            problems.append(f"{path}: string without maxLength or enum")
        if kind_ == "array" and "maxItems" not in node:
            problems.append(f"{path}: list without maxItems")
        if "additionalProperties" in node and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                if key not in item.get("required", []) and "default" not in item["properties"][key]:
                    problems.append(f"{path}: list-map key {key} neither required nor defaulted")
    assert problems == []


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.KIND)
def test_crd_names_columns_and_subresources(kind: Any) -> None:
    doc = crdgen.crd(kind)
    names = doc["spec"]["names"]
    assert names["categories"] == ["podtrace"]
    assert names["shortNames"] == kind.SHORT_NAMES
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][-1] == "Age"


def test_printer_columns_are_the_promised_ones() -> None:
    columns = {
        k.KIND: [c["name"].upper() for c in crdgen.crd(k)["spec"]["versions"][0]
                 ["additionalPrinterColumns"] if c.get("priority", 0) == 0]
        for k in crdgen.KINDS
    }
    assert columns == {
        "TracingPolicy": ["VALID", "NODES", "CONTAINERS", "AGE"],
        "ContainerTrace": ["PHASE", "TARGETS", "SYSCALLS", "EXECS", "AGE"],
        "NodeTracer": ["READY", "BACKEND", "RUNTIME", "CGROUP", "TRACED", "DROPPED", "AGE"],
    }


def test_crd_yaml_round_trips() -> None:
    for text in crdgen.crd_files().values():
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_kustomization_lists_every_crd() -> None:
    listed = yaml.safe_load(crdgen.files()["kustomization.yaml"])["resources"]
    assert sorted(listed) == sorted(crdgen.crd_files())
