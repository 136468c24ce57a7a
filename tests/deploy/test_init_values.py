"""The Helm values ``ffa-lora init`` writes per site render with the real chart: ``helm lint``,
``helm template`` (the chart's values schema and its validateValues rules), every object valid
for Kubernetes, and the rendered config.yaml accepted by the services with the spec's choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, KUBE_VERSION, REPO, load_tool, run_helm

from ffa_lora_tools import init
from services.common.config import parse_config

SPEC = REPO / "docs" / "init-spec.yaml"


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("init") / "fed"
    assert init.main([str(SPEC), "-o", str(out)]) == 0
    return {p.parent.name: p for p in sorted(out.glob("**/helm-values.yaml"))}


def config_yaml(objs: list[dict[str, Any]]) -> dict[str, Any]:
    maps = [o for o in objs if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})]
    assert len(maps) == 1
    return dict(yaml.safe_load(maps[0]["data"]["config.yaml"]))


def test_every_site_lints_and_renders_valid_objects(
    helm: str, render: Any, sites: dict[str, Path]
) -> None:
    pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate for schema validation"
    )
    validator = load_tool("validate_manifests")
    assert set(sites) == {
        "coordinator",
        "edge-eu-west",
        "edge-eu-north",
        "hospital-a",
        "hospital-b",
        "hospital-c",
        "keyholder-1",
        "keyholder-2",
    }
    for name, values in sites.items():
        run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))
        objs = render([values])
        report = validator.validate_objects([(o["kind"], o) for o in objs], [KUBE_VERSION])
        assert report.ok, f"{name}: " + "\n".join(report.errors)
        cfg = parse_config(config_yaml(objs), source=name)
        assert cfg.tls.cert == Path("/etc/ffa-lora/tls/tls.crt")


def test_rendered_configs_carry_the_spec(render: Any, sites: dict[str, Path]) -> None:
    coordinator = parse_config(
        config_yaml(render([sites["coordinator"]])), source="coordinator"
    ).coordinator
    assert coordinator is not None
    fed = coordinator.federation
    assert (fed.name, fed.labels, fed.rounds.max_rounds, fed.privacy.mode) == (
        "hospitals-eu",
        ["negative", "neutral", "positive"],
        10,
        "central",
    )
    objs = render([sites["edge-eu-west"]])
    edge = parse_config(config_yaml(objs), source="edge").edge
    assert (
        edge is not None and edge.coordinator_address == "coordinator.hospitals.example.org:50051"
    )
    assert edge.region == "eu-west"
    mounted = [
        v
        for o in objs
        if o["kind"] == "StatefulSet"
        for v in o["spec"]["template"]["spec"]["volumes"]
    ]
    secrets = [
        s["secret"]["name"]
        for v in mounted
        for s in v.get("projected", {}).get("sources", [])
        if "secret" in s
    ]
    assert secrets == ["hospitals-eu-edge-eu-west-tls-0"]  # the name k8s-secrets.sh creates
    client = parse_config(config_yaml(render([sites["hospital-b"]])), source="client").client
    assert client is not None
    assert client.edges == [
        "edge-eu-west.hospitals.example.org:50052",
        "edge-eu-north.hospitals.example.org:50052",
    ]
    assert (str(client.data.path), client.data.label_column) == ("/data/notes.csv", "outcome")
