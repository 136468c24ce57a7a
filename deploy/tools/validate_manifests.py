#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests offline, strictly.

Built-in kinds are checked with the PyPI package ``kubernetes-validate`` in strict mode
(unknown fields are errors) against every requested Kubernetes version (default: 1.29.0, the
chart's minimum, and the newest the installed package knows). The custom resources the chart
renders (ServiceMonitor, PrometheusRule, Certificate, Issuer) are checked against the bundled
subset schemas in ``deploy/tools/crd-schemas/`` (see its README). An object of any other kind
is an error: nothing is skipped silently.

Usage: validate_manifests.py [-k VERSION ...] FILE [FILE ...]   ("-" reads stdin)
Exit status 0 when every object is valid, 1 otherwise; one line per problem on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_SCHEMA_DIR = Path(__file__).resolve().parent / "crd-schemas"
MIN_KUBERNETES = "1.29.0"


@dataclass
class Report:
    """Outcome of validating a set of objects."""

    checked: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no object failed."""
        return not self.errors

    def summary(self) -> str:
        """One line: how many objects of which kinds passed, or how many problems."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.checked.items()))
        total = sum(self.checked.values())
        if self.ok:
            return f"OK: {total} objects valid ({kinds})"
        return f"FAILED: {len(self.errors)} problem(s) in {total} objects ({kinds})"


def newest_kubernetes() -> str:
    """The newest Kubernetes version whose schemas the installed kubernetes-validate has."""
    from kubernetes_validate import utils

    return utils.latest_version()


def load_documents(paths: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """(source name, object) for every non-empty YAML document in ``paths``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for p in paths:
        text = sys.stdin.read() if p == "-" else Path(p).read_text()
        for i, doc in enumerate(yaml.safe_load_all(text)):
            if doc:
                out.append((f"{p}#{i}", doc))
    return out


def _crd_schema(obj: dict[str, Any]) -> dict[str, Any] | None:
    api = str(obj.get("apiVersion", ""))
    if "/" not in api:
        return None
    group, version = api.split("/", 1)
    path = CRD_SCHEMA_DIR / f"{str(obj.get('kind', '')).lower()}-{group}-{version}.json"
    if not path.exists():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def validate_objects(objects: list[tuple[str, dict[str, Any]]], versions: list[str]) -> Report:
    """Validate each object; built-in kinds against every version in ``versions``."""
    from kubernetes_validate import utils as kv

    report = Report()
    for source, obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            report.errors.append(f"{source}: not a Kubernetes object (no kind/apiVersion)")
            continue
        report.checked[obj["kind"]] += 1
        crd = _crd_schema(obj)
        if crd is not None:
            validator = jsonschema.Draft7Validator(crd)
            for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in err.path) or "(root)"
                report.errors.append(
                    f"{source} {_name(obj)} (bundled CRD schema): {where}: {err.message}"
                )
            continue
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as err:
                where = ".".join(str(p) for p in err.path) or "(root)"
                report.errors.append(
                    f"{source} {_name(obj)} (kubernetes {err.version} strict):"
                    f" {where}: {err.message}"
                )
            except kv.SchemaNotFoundError as err:
                report.errors.append(
                    f"{source} {_name(obj)}: {err.message}; add a schema to "
                    f"{CRD_SCHEMA_DIR.name}/ if it is a custom resource"
                )
                break
            except kv.VersionNotSupportedError:
                report.errors.append(f"kubernetes-validate has no schemas for {version}")
                return report
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="rendered manifests ('-' = stdin)")
    ap.add_argument(
        "-k",
        "--kubernetes-version",
        action="append",
        dest="versions",
        help=f"version to validate against (repeatable; default {MIN_KUBERNETES} "
        "and the newest known)",
    )
    args = ap.parse_args(argv)
    versions = args.versions or sorted({MIN_KUBERNETES, newest_kubernetes()})
    report = validate_objects(load_documents(args.files), versions)
    for line in report.errors:
        print(f"ERROR {line}")
    print(f"{report.summary()} [kubernetes {', '.join(versions)} strict + bundled CRD schemas]")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
