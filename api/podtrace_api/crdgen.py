"""Generate the CRD YAML in crds/ from the pydantic models.

The models are the single source of truth; crds/*.yaml is never edited by hand
and a unit test fails when the committed files differ from what this writes.
Pydantic emits JSON Schema (refs, anyOf-null for optionals, titles); the
apiserver wants a *structural* OpenAPI v3 schema (everything inlined, one type
per node, no additionalProperties: false). This module bridges the two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from . import GROUP, VERSION
from .containertrace import ContainerTrace
from .nodetracer import NodeTracer
from .tracingpolicy import TracingPolicy

GENERATOR = "podtrace-crdgen/1"
KINDS: tuple[type[BaseModel], ...] = (TracingPolicy, ContainerTrace, NodeTracer)


class _Schema(GenerateJsonSchema):
    """Emit the whole default object for fields whose default is a model, so
    `observe` absent means the same as the model's defaults. (`default: {}` is not
    enough: the apiserver checks a default against the CEL rules as it is written,
    before the nested defaults apply.)"""

    def default_schema(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()
            inner = self.generate_inner(schema["schema"])
            if isinstance(value, BaseModel):
                default = value.model_dump(by_alias=True, exclude_none=True, mode="json")
                return {**inner, "default": default}
            return inner
        return super().default_schema(schema)


def _merge(target: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    """A field's schema over its type's; the field's words first, then the type's,
    so `kubectl explain` says both what the field is for and what the type is."""
    described = [d for d in (field.get("description"), target.get("description")) if d]
    merged = {**target, **field}
    if described:
        merged["description"] = " ".join(dict.fromkeys(described))
    return merged


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $refs, collapse Optional's anyOf-null, drop what CRDs do not allow."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        node = _merge(_resolve(defs[node.pop("$ref").rsplit("/", 1)[-1]], defs), node)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"union types cannot be expressed in a structural schema: {node}")
        node = _merge(_resolve(options[0], defs), node)
        if node.get("default", ...) is None:
            del node["default"]
    node.pop("title", None)
    if isinstance(node.get("description"), str):
        node["description"] = " ".join(node["description"].split())
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if node.get("default", ...) is None:
        del node["default"]
    return {key: _resolve(value, defs) for key, value in node.items()}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_Schema, mode="validation")
    return _resolve(raw, raw.pop("$defs", {}))


def crd(kind: type[BaseModel]) -> dict[str, Any]:
    """The CustomResourceDefinition object for one kind."""
    schema = openapi_schema(kind)
    properties = {
        "apiVersion": {"type": "string", "description": "The API version: podtrace.io/v1alpha1."},
        "kind": {"type": "string", "description": f"The kind: {kind.KIND}."},
        "metadata": {"type": "object"},
        **schema["properties"],
    }
    top = {"type": "object", "description": schema["description"], "properties": properties}
    if "required" in schema:
        top["required"] = schema["required"]
    plural = kind.PLURAL
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {"podtrace.io/generated-by": GENERATOR},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.KIND,
                "listKind": f"{kind.KIND}List",
                "plural": plural,
                "singular": kind.KIND.lower(),
                "shortNames": kind.SHORT_NAMES,
                "categories": ["podtrace"],
            },
            "scope": "Namespaced" if kind.NAMESPACED else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": top},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {**c, "priority": int(c["priority"])} if "priority" in c else c
                        for c in kind.PRINTER_COLUMNS
                    ],
                }
            ],
        },
    }


def render(kind: type[BaseModel]) -> str:
    """The CRD as YAML text, byte-for-byte reproducible."""
    header = f"# Generated by {GENERATOR} from podtrace_api; do not edit. Run `make crds`.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100, allow_unicode=True)


def crd_files() -> dict[str, str]:
    """File name → content for every CRD."""
    return {f"{GROUP}_{kind.PLURAL}.yaml": render(kind) for kind in KINDS}


def kustomization(names: list[str]) -> str:
    """crds/kustomization.yaml: `kubectl apply -k manifests/` (which lists ../crds) installs
    the CRDs with everything else, so a GitOps tool pointed at manifests/ needs no second
    step. Apply crds/ alone with `kubectl apply -k crds/`, not -f (this file is no object)."""
    listed = "".join(f"  - {name}\n" for name in sorted(names))
    return (
        f"# Generated by {GENERATOR} from podtrace_api; do not edit. Run `make crds`.\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n{listed}"
    )


def files() -> dict[str, str]:
    """File name → content for everything in crds/: the CRDs and their kustomization."""
    crds = crd_files()
    return {**crds, "kustomization.yaml": kustomization(list(crds))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="directory to write the CRD YAML into")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    wanted = files()
    for stale in args.outdir.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (args.outdir / name).write_text(text)
        print(f"wrote {args.outdir / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
