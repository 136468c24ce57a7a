#!/usr/bin/env python3
"""Generate the ffa-lora Grafana dashboard from the service metric names.

Writes ``deploy/grafana/ffa-lora-dashboard.json`` and the chart's copy
``deploy/helm/ffa-lora/files/dashboards/ffa-lora-dashboard.json`` (shipped as a ConfigMap for
the Grafana sidecar). ``--check`` only verifies that both files are up to date (used by
``deploy/check.sh``).

Every query uses only the metric names fixed for the services (``METRICS``); the variables
filter on ``namespace`` (present with ServiceMonitors, absent in the local demo, where the
``.*`` "All" value still matches).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = (
    REPO / "deploy/grafana/ffa-lora-dashboard.json",
    REPO / "deploy/helm/ffa-lora/files/dashboards/ffa-lora-dashboard.json",
)

#: Metric families the services export (histograms without their _bucket/_sum/_count suffix).
METRICS: tuple[str, ...] = (
    "ffalora_round",
    "ffalora_round_phase",
    "ffalora_round_duration_seconds",
    "ffalora_connected_clients",
    "ffalora_roster_clients",
    "ffalora_updates_accepted_total",
    "ffalora_updates_rejected_total",
    "ffalora_bytes_received_total",
    "ffalora_bytes_sent_total",
    "ffalora_encrypt_seconds",
    "ffalora_decrypt_seconds",
    "ffalora_privacy_epsilon_spent",
    "ffalora_global_loss",
    "ffalora_global_accuracy",
    "ffalora_global_roc_auc",
    "ffalora_global_class_roc_auc",
    "ffalora_client_val_roc_auc",
    "ffalora_client_rank",
    "ffalora_values_uploaded_total",
    "ffalora_buffer_size",
    "ffalora_deid_entities_total",
)

SEL = 'namespace=~"$namespace"'
DS = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


class _Layout:
    """Places panels left to right on a 24-column grid, wrapping rows."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_h
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1
        self.x, self.row_h = 0, 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel.setdefault("datasource", DS)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _stat(
    title: str, expr: str, unit: str = "none", decimals: int | None = None, description: str = ""
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "targets": [_target(expr, "")],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }


def _ts(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": True,
    }
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _quantiles(metric: str, service: str) -> list[dict[str, Any]]:
    return [
        _target(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket"
            f'{{service="{service}", {SEL}}}[$__rate_interval])))',
            f"p{int(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]


def build() -> dict[str, Any]:
    """Return the dashboard as a JSON-serialisable dict."""
    lay = _Layout()
    coord = f'service="coordinator", {SEL}'
    edge = f'service="edge", {SEL}'
    client = f'service="client", {SEL}'

    lay.row("Federation")
    lay.add(
        _stat(
            "Round",
            f"max(ffalora_round{{{coord}}})",
            decimals=0,
            description="Current round number at the coordinator.",
        ),
        4,
        5,
    )
    lay.add(
        _stat(
            "Phase",
            f"max by (phase) (ffalora_round_phase{{{coord}}}) == 1",
            description="Round phase the coordinator is in (gauge = 1).",
        ),
        4,
        5,
    )
    lay.panels[-1]["targets"][0]["legendFormat"] = "{{phase}}"
    lay.panels[-1]["options"]["textMode"] = "name"
    lay.add(
        _stat(
            "Privacy ε spent",
            f"max(ffalora_privacy_epsilon_spent{{{coord}}})",
            decimals=3,
            description="Differential-privacy epsilon spent so far "
            "(written durably before each noised model is released).",
        ),
        4,
        5,
    )
    lay.add(
        _stat(
            "Connected clients",
            f"sum(ffalora_connected_clients{{{edge}}})",
            decimals=0,
            description="Clients connected to all edges.",
        ),
        4,
        5,
    )
    lay.add(
        _stat(
            "Updates accepted (all services)",
            f"sum(ffalora_updates_accepted_total{{{SEL}}})",
            decimals=0,
        ),
        4,
        5,
    )
    lay.add(
        _stat(
            "Updates rejected (all services)",
            f"sum(ffalora_updates_rejected_total{{{SEL}}})",
            decimals=0,
        ),
        4,
        5,
    )
    lay.add(
        _ts(
            "Global loss",
            [_target(f"ffalora_global_loss{{{coord}}}", "loss")],
            description="Weighted global training loss reported after each round.",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Global accuracy and ROC-AUC",
            [_target(f"ffalora_global_accuracy{{{coord}}}", "accuracy"),
             _target(f"ffalora_global_roc_auc{{{coord}}}", "macro ROC-AUC", "B")],
            unit="percentunit",
            description="On the coordinator's held-out evaluation set (accuracy: the clients' validation "
            "accuracy when there is none).",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Round duration", _quantiles("ffalora_round_duration_seconds", "coordinator"), unit="s"
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "ROC-AUC per class (held-out evaluation set)",
            [_target(f"ffalora_global_class_roc_auc{{{coord}}}", "{{class}}")],
            unit="percentunit",
        ),
        12,
        8,
    )
    lay.add(
        _ts(
            "Per-site validation ROC-AUC: global vs personalized head",
            [_target(f"ffalora_client_val_roc_auc{{{coord}}}", "{{client}} {{head}}")],
            unit="percentunit",
            description="training.personalization: head. Each site's validation split scored with the "
            "global head and with its own, reported on the evaluation rounds (not under DP).",
        ),
        12,
        8,
    )
    lay.add(
        _ts(
            "Round and phase",
            [
                _target(f"max(ffalora_round{{{coord}}})", "round", "A"),
                _target(f"max by (phase) (ffalora_round_phase{{{coord}}})", "{{phase}}", "B"),
            ],
        ),
        12,
        8,
    )
    lay.add(
        _ts(
            "Privacy ε over time",
            [_target(f"max(ffalora_privacy_epsilon_spent{{{coord}}})", "epsilon")],
        ),
        12,
        8,
    )

    lay.row("Edges")
    lay.add(
        _ts(
            "Clients per edge: connected / on the roster (check-in clients away count on the roster)",
            [_target(f"sum by (instance) (ffalora_connected_clients{{{edge}}})", "{{instance}} connected"),
             _target(f"sum by (instance) (ffalora_roster_clients{{{edge}}})", "{{instance}} roster", "B")],
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Buffered updates per edge",
            [_target(f"sum by (instance) (ffalora_buffer_size{{{edge}}})", "{{instance}}")],
            description="Encrypted updates buffered (async mode) or added (sync mode) and "
            "not yet forwarded.",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Updates accepted / s",
            [
                _target(
                    f"sum by (service) (rate(ffalora_updates_accepted_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{service}}",
                )
            ],
            unit="ops",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Updates rejected / s by reason",
            [
                _target(
                    f"sum by (service, reason) (rate(ffalora_updates_rejected_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{service}}: {{reason}}",
                )
            ],
            unit="ops",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        _ts(
            "Bytes in / out per service",
            [
                _target(
                    f"sum by (service) (rate(ffalora_bytes_received_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{service}} in",
                    "A",
                ),
                _target(
                    f"-sum by (service) (rate(ffalora_bytes_sent_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{service}} out",
                    "B",
                ),
            ],
            unit="Bps",
        ),
        12,
        8,
    )

    lay.row("Crypto and clients")
    lay.add(
        _ts(
            "Client encryption time",
            _quantiles("ffalora_encrypt_seconds", "client"),
            unit="s",
            description="Paillier packing + encryption of one update.",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Coordinator decryption time",
            _quantiles("ffalora_decrypt_seconds", "coordinator"),
            unit="s",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "Values uploaded / s",
            [
                _target(
                    f"sum by (service) (rate(ffalora_values_uploaded_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{service}}",
                )
            ],
            unit="ops",
        ),
        8,
        8,
    )
    lay.add(
        _ts(
            "LoRA rank per client",
            [_target(f"max by (client) (ffalora_client_rank{{{SEL}}})", "{{client}}")],
            description="Rank the coordinator scheduled for each client.",
        ),
        12,
        8,
    )
    lay.add(
        _ts(
            "De-identified entities / s",
            [
                _target(
                    f"sum by (entity_type) (rate(ffalora_deid_entities_total{{{client}}}"
                    "[$__rate_interval]))",
                    "{{entity_type}}",
                )
            ],
            unit="ops",
            stack=True,
        ),
        12,
        8,
    )

    return {
        "uid": "ffa-lora-federation",
        "title": "FFA-LoRA federation",
        "description": "Rounds, privacy budget, edges, crypto timings and client ranks of an "
        "ffa-lora federation.",
        "tags": ["ffa-lora", "federated-learning"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(ffalora_round, namespace)", "refId": "ns"},
                    "definition": "label_values(ffalora_round, namespace)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "hide": 0,
                    "sort": 1,
                },
            ]
        },
        "panels": lay.panels,
    }


def render() -> str:
    """The dashboard JSON text exactly as written to disk."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) both copies of the dashboard."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a file is missing or stale")
    args = ap.parse_args(argv)
    text = render()
    stale = [p for p in OUTPUTS if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(
                f"stale: {p.relative_to(REPO)} (run: python3 deploy/tools/gen_dashboard.py)",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for p in OUTPUTS:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        print(f"wrote {p.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
