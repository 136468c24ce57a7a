#!/usr/bin/env python3
"""Generate ``deploy/helm/ffa-lora/values.schema.json`` from ``values.yaml``.

Types come from the default values, descriptions from the ``## @param`` comments, and the
constraints the defaults cannot show (enums, patterns, ranges, free-form maps) from the
``RULES`` table below. Every object is closed (``additionalProperties: false``) unless it is
free-form, so a misspelt value fails ``helm install`` instead of being ignored.

``--check`` verifies that the committed schema is current and that every value has a
``## @param`` line (used by ``deploy/check.sh``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/ffa-lora"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"

PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"}
CIDR = {"type": "string", "pattern": r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"}
OPEN_OBJECT = {"type": "object"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_LIST = {"type": "array"}
PROBE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["enabled"],
    "properties": {
        "enabled": {"type": "boolean"},
        **{
            k: {"type": "integer", "minimum": 0}
            for k in (
                "initialDelaySeconds",
                "periodSeconds",
                "timeoutSeconds",
                "failureThreshold",
                "successThreshold",
            )
        },
    },
}
INT_OR_PERCENT_OR_EMPTY = {
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^([0-9]+%?)?$"}]
}
PERCENT_OR_EMPTY = {
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"type": "string", "maxLength": 0}]
}
CERT_ID = {"type": "string", "pattern": r"^[A-Za-z0-9._-]{0,64}$"}
DNS_LABEL_30 = {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,28}[a-z0-9])?$"}

#: (glob over dotted value paths, schema). The first match wins; "*" matches within one level.
RULES: list[tuple[str, dict[str, Any]]] = [
    (
        "global.imagePullSecrets",
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                    },
                ]
            },
        },
    ),
    ("commonLabels", STRING_MAP),
    ("commonAnnotations", STRING_MAP),
    ("logLevel", {"type": "string", "enum": ["DEBUG", "INFO", "WARNING", "ERROR"]}),
    ("federation.name", {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}),
    ("tls.certManager.issuerRef.kind", {"type": "string", "enum": ["Issuer", "ClusterIssuer"]}),
    ("tls.certManager.duration", DURATION),
    ("tls.certManager.renewBefore", DURATION),
    ("tls.certManager.extraDnsNames", {"type": "array", "items": {"type": "string"}}),
    ("monitoring.*.mode", {"type": "string", "enum": ["auto", "always", "never"]}),
    ("monitoring.serviceMonitor.interval", DURATION),
    ("monitoring.serviceMonitor.scrapeTimeout", DURATION),
    ("monitoring.*.labels", STRING_MAP),
    ("monitoring.grafanaDashboard.labels", STRING_MAP),
    ("monitoring.grafanaDashboard.annotations", STRING_MAP),
    ("monitoring.prometheusNamespaceSelector", OPEN_OBJECT),
    ("monitoring.prometheusPodSelector", OPEN_OBJECT),
    ("tests.resources", OPEN_OBJECT),
    # per component
    ("edgeAggregator.region", DNS_LABEL_30),
    (
        "clientAgent.identity.id",
        {"type": "string", "pattern": r"^([a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?)?$"},
    ),
    # edge replicas get "<id>-<ordinal>": leave room for the suffix within the 64-char limit
    ("edgeAggregator.identity.id", {"type": "string", "pattern": r"^[A-Za-z0-9._-]{0,60}$"}),
    ("*.identity.id", CERT_ID),
    ("*.image.pullPolicy", {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}),
    ("*.image.digest", {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"}),
    ("*.image.tag", {"type": ["string", "number"]}),
    ("cloudCoordinator.replicaCount", {"type": "integer", "minimum": 0}),
    ("clientAgent.replicaCount", {"type": "integer", "minimum": 0}),
    ("edgeAggregator.replicaCount", {"type": "integer", "minimum": 0}),
    ("*.containerPorts.*", PORT),
    ("*.service.ports.*", PORT),
    ("*.service.type", {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]}),
    ("*.service.externalTrafficPolicy", {"type": "string", "enum": ["Cluster", "Local"]}),
    (
        "*.service.nodePorts.grpc",
        {
            "anyOf": [
                {"type": "integer", "minimum": 30000, "maximum": 32767},
                {"type": "string", "pattern": r"^([0-9]{5})?$"},
            ]
        },
    ),
    ("*.service.loadBalancerSourceRanges", {"type": "array", "items": CIDR}),
    ("*.service.annotations", STRING_MAP),
    ("*.metrics.path", {"type": "string", "pattern": "^/"}),
    (
        "cloudCoordinator.config",
        {"type": "object", "properties": {"federation": {"type": "object"}}},
    ),
    (
        "clientAgent.config",
        {
            "type": "object",
            "properties": {
                "device": {"type": "string", "enum": ["auto", "cpu", "cuda"]},
                "edges": {
                    "type": "array",
                    "items": {"type": "string", "pattern": r"^[^\s:]+:[0-9]+$"},
                },
                "data": {"type": "object"},
                "deid": {"type": "object"},
            },
        },
    ),
    ("keyHolder.config", {"type": "object"}),
    ("keyHolder.identity.id", {"type": "string", "pattern": r"^[A-Za-z0-9._-]{0,64}$"}),
    (
        "cloudCoordinator.threshold.holders",
        {
            "type": "array",
            "minItems": 2,
            "items": {"type": "string", "pattern": r"^(coordinator|keyholder)/[A-Za-z0-9._-]{1,64}$"},
        },
    ),
    ("cloudCoordinator.threshold.t", {"type": "integer", "minimum": 1}),
    (
        "edgeAggregator.config",
        {
            "type": "object",
            "properties": {
                "coordinator_address": {"type": "string", "pattern": r"^[^\s:]+:[0-9]+$"}
            },
        },
    ),
    ("*.persistence.size", QUANTITY),
    ("*.persistence.mountPath", {"type": "string", "pattern": "^/"}),
    (
        "*.persistence.accessModes",
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "string",
                "enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"],
            },
        },
    ),
    ("*.persistence.retentionPolicy.*", {"type": "string", "enum": ["Retain", "Delete"]}),
    ("*.persistence.annotations", STRING_MAP),
    ("*.resources", OPEN_OBJECT),
    ("*.podSecurityContext", OPEN_OBJECT),
    ("*.containerSecurityContext", OPEN_OBJECT),
    ("*.*Probe", PROBE),
    ("*.nodeSelector", STRING_MAP),
    ("*.tolerations", ANY_LIST),
    ("*.affinity", OPEN_OBJECT),
    ("*.topologySpreadConstraints", ANY_LIST),
    ("*.podLabels", STRING_MAP),
    ("*.podAnnotations", STRING_MAP),
    ("*.terminationGracePeriodSeconds", {"type": "integer", "minimum": 0}),
    (
        "edgeAggregator.updateStrategy",
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "enum": ["RollingUpdate", "OnDelete"]}},
        },
    ),
    (
        "*.updateStrategy",
        {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["RollingUpdate", "OnDelete", "Recreate"]}
            },
        },
    ),
    ("*.serviceAccount.annotations", STRING_MAP),
    ("*.networkPolicy.*CIDRs", {"type": "array", "items": CIDR}),
    ("*.networkPolicy.extra*", ANY_LIST),
    ("*.extraEnvVars", ANY_LIST),
    ("*.extraVolumes", ANY_LIST),
    ("*.extraVolumeMounts", ANY_LIST),
    ("edgeAggregator.autoscaling.*Replicas", {"type": "integer", "minimum": 1}),
    ("edgeAggregator.autoscaling.target*", PERCENT_OR_EMPTY),
    ("edgeAggregator.autoscaling.metrics", ANY_LIST),
    ("edgeAggregator.autoscaling.behavior", OPEN_OBJECT),
    ("edgeAggregator.pdb.minAvailable", INT_OR_PERCENT_OR_EMPTY),
    ("edgeAggregator.pdb.maxUnavailable", INT_OR_PERCENT_OR_EMPTY),
    ("clientAgent.gpu.count", {"type": "integer", "minimum": 1}),
    (
        "clientAgent.gpu.resourceName",
        {"type": "string", "pattern": r"^[a-z0-9.-]+/[a-zA-Z0-9._-]+$"},
    ),
]

_PARAM_RE = re.compile(r"^\s*##\s*@param\s+(\S+)\s*(.*)$")


def param_docs(text: str) -> dict[str, str]:
    """Map each ``## @param`` path to its description."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _PARAM_RE.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _rule(path: str) -> dict[str, Any] | None:
    for pattern, schema in RULES:
        # fnmatch's "*" also crosses dots; require the same number of levels
        if pattern.count(".") == path.count(".") and fnmatch.fnmatchcase(path, pattern):
            return json.loads(json.dumps(schema))
    return None


def _infer(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    return {"type": "object"}


def schema_for(value: Any, path: str, docs: dict[str, str]) -> dict[str, Any]:
    """JSON schema of one value (recursing into closed objects)."""
    rule = _rule(path) if path else None
    if rule is not None:
        node = rule
    elif isinstance(value, dict):
        node = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                k: schema_for(v, f"{path}.{k}" if path else k, docs) for k, v in value.items()
            },
        }
    else:
        node = _infer(value)
    if path in docs:
        node["description"] = docs[path]
    return node


def leaf_paths(value: Any, path: str = "") -> list[str]:
    """Dotted paths that must carry a ``## @param`` (closed objects are descended)."""
    if path and _rule(path) is not None:
        return [path]
    if isinstance(value, dict) and value:
        out: list[str] = []
        for k, v in value.items():
            out += leaf_paths(v, f"{path}.{k}" if path else k)
        return out
    return [path] if path else []


def build() -> dict[str, Any]:
    """The schema document."""
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    schema = schema_for(values, "", param_docs(text))
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "ffa-lora chart values",
        **schema,
    }


def render() -> str:
    """The schema text exactly as written to disk."""
    return json.dumps(build(), indent=2) + "\n"


def undocumented() -> list[str]:
    """Values without a ``## @param`` line."""
    text = VALUES.read_text()
    docs = param_docs(text)
    return [p for p in leaf_paths(yaml.safe_load(text)) if p not in docs]


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) values.schema.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if stale or undocumented")
    args = ap.parse_args(argv)
    missing = undocumented()
    for p in missing:
        print(f"values.yaml: {p} has no '## @param {p} <description>' line", file=sys.stderr)
    text = render()
    if args.check:
        stale = not SCHEMA.exists() or SCHEMA.read_text() != text
        if stale:
            print(
                f"stale: {SCHEMA.relative_to(REPO)} "
                "(run: python3 deploy/tools/gen_values_schema.py)",
                file=sys.stderr,
            )
        return 1 if (stale or missing) else 0
    SCHEMA.write_text(text)
    print(f"wrote {SCHEMA.relative_to(REPO)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
