"""`podtrace`: a small command line for users of podtrace.

    podtrace version            the version of the API and tools
    podtrace crds               print the CRDs (pipe into `kubectl apply -f -`)
    podtrace validate FILE...   check TracingPolicy/ContainerTrace YAML before committing
                                it to a GitOps repository: the schema bounds, and the same
                                checks the operator makes (podtrace_operator.validation:
                                syscall names, overlapping rules, label syntax); cross-field
                                CEL rules are checked by the apiserver
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from podtrace_api import API_VERSION
from podtrace_api.containertrace import ContainerTrace
from podtrace_api.crdgen import KINDS, render
from podtrace_api.syscalls import SeccompUnavailable
from podtrace_api.tracingpolicy import TracingPolicy

from .validation import check_policy, check_trace

_BY_KIND: dict[str, type[BaseModel]] = {kind.KIND: kind for kind in KINDS}


def _version() -> str:
    try:
        return version("podtrace")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def validate_document(doc: dict[str, Any]) -> list[str]:
    """Problems with one manifest, as `field: message` lines (empty when valid)."""
    if doc.get("apiVersion") != API_VERSION:
        return [f"apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}"]
    model = _BY_KIND.get(doc.get("kind", ""))
    if model is None:
        return [f"kind: expected one of {sorted(_BY_KIND)}, got {doc.get('kind')!r}"]
    body = {key: value for key, value in doc.items() if key in ("spec", "status")}
    try:
        obj = model.model_validate(body)
    except ValidationError as err:
        return [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in err.errors(include_url=False)
        ]
    if isinstance(obj, TracingPolicy):
        return [str(p) for p in check_policy(obj.spec)]
    if isinstance(obj, ContainerTrace):
        return [str(p) for p in check_trace(obj.spec)]
    return []  # NodeTracer: written by podtrace itself


def _validate(paths: list[Path]) -> int:
    failed = False
    for path in paths:
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not doc:
                continue
            name = doc.get("metadata", {}).get("name", f"document {index}")
            try:
                problems = validate_document(doc)
            except SeccompUnavailable as err:
                print(f"podtrace: {err}", file=sys.stderr)
                return 2
            for problem in problems:
                print(f"{path}: {doc.get('kind')}/{name}: {problem}")
            failed = failed or bool(problems)
            if not problems:
                print(f"{path}: {doc.get('kind')}/{name}: valid")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podtrace", description="podtrace command line")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("version", help="print the version")
    verbs.add_parser("crds", help="print the CRDs as YAML")
    check = verbs.add_parser("validate", help="validate TracingPolicy/ContainerTrace YAML")
    check.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "version":
        print(f"podtrace {_version()} (API {API_VERSION})")
        return 0
    if args.verb == "crds":
        print("---\n".join(render(kind) for kind in KINDS), end="")
        return 0
    return _validate(args.files)


if __name__ == "__main__":
    raise SystemExit(main())
