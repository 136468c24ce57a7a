"""``ffa-lora init``: the folder it writes (certificates, keys, configs, Helm values), and one
clear error per wrong piece of the spec, with nothing written when the spec is wrong."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography import x509

from ffa_lora.errors import ConfigError
from ffa_lora_tools import init
from ffa_lora_tools.init_spec import parse_spec
from services.common.certs import identity_from_certificate
from services.common.config import load_config

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "docs" / "init-spec.yaml"
SCHEMA = REPO / "deploy" / "helm" / "ffa-lora" / "values.schema.json"


def example() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text()))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "fed"
    assert init.main([str(EXAMPLE), "-o", str(out)]) == 0
    return out


def service_folders(out: Path) -> list[Path]:
    return [
        out / "coordinator",
        *sorted((out / "edges").iterdir()),
        *sorted((out / "clients").iterdir()),
    ]


def test_every_service_folder_holds_a_valid_config_and_its_files(fed: Path) -> None:
    folders = service_folders(fed)
    assert [f.name for f in folders] == [
        "coordinator",
        "edge-eu-north",
        "edge-eu-west",
        "hospital-a",
        "hospital-b",
        "hospital-c",
    ]
    for folder in folders:
        cfg = load_config(folder / "config.yaml")
        for path in (cfg.tls.ca, cfg.tls.cert, cfg.tls.key):
            assert not path.is_absolute() and (folder / path).is_file()
        assert stat.S_IMODE((folder / cfg.tls.key).stat().st_mode) == 0o600
        assert (folder / "tls" / "ca.crt").read_bytes() == (fed / "ca" / "ca.crt").read_bytes()
    coordinator = load_config(fed / "coordinator" / "config.yaml").coordinator
    assert coordinator is not None
    f = coordinator.federation
    assert f.name == "hospitals-eu" and f.labels == ["negative", "neutral", "positive"]
    assert f.model.num_labels == 3 and f.rounds.max_rounds == 10 and f.privacy.mode == "central"
    assert coordinator.listen == "0.0.0.0:50051" and coordinator.fernet_key_file == Path(
        "secrets/fernet.key"
    )
    client = load_config(fed / "clients" / "hospital-b" / "config.yaml").client
    assert client is not None
    assert client.edges == [
        "edge-eu-west.hospitals.example.org:50052",
        "edge-eu-north.hospitals.example.org:50052",
    ]
    assert (client.data.text_column, client.data.labels) == (
        "note",
        ["negative", "neutral", "positive"],
    )
    edge = load_config(fed / "edges" / "edge-eu-north" / "config.yaml").edge
    assert (
        edge is not None and edge.coordinator_address == "coordinator.hospitals.example.org:50051"
    )


def test_certificates_name_each_service_and_its_address(fed: Path) -> None:
    seen = {}
    for folder in service_folders(fed):
        cfg = load_config(folder / "config.yaml")
        cert = x509.load_pem_x509_certificate((folder / cfg.tls.cert).read_bytes())
        peer = identity_from_certificate(cert, federation="hospitals-eu")
        seen[folder.name] = str(peer)
        if cfg.service == "edge":  # clients verify the host they dial
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert f"{folder.name}.hospitals.example.org" in names.get_values_for_type(x509.DNSName)
    assert seen == {
        "coordinator": "coordinator/coordinator",
        "edge-eu-north": "edge/edge-eu-north-0",
        "edge-eu-west": "edge/edge-eu-west-0",
        "hospital-a": "client/hospital-a",
        "hospital-b": "client/hospital-b",
        "hospital-c": "client/hospital-c",
    }
    coord = x509.load_pem_x509_certificate(
        (fed / "coordinator/tls/coordinator-coordinator.crt").read_bytes()
    )
    dns = coord.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert "coordinator.hospitals.example.org" in dns and "ffa-lora-coordinator" in dns


def test_the_ca_key_is_kept_apart_and_the_fernet_key_private(fed: Path) -> None:
    ca_key = (fed / "ca" / "ca.key").read_bytes()
    for folder in service_folders(fed):
        for path in folder.rglob("*"):
            assert path.name != "ca.key"
            assert not path.is_file() or ca_key not in path.read_bytes(), path
    fernet = fed / "coordinator" / "secrets" / "fernet.key"
    assert stat.S_IMODE(fernet.stat().st_mode) == 0o600
    assert stat.S_IMODE(fernet.parent.stat().st_mode) == 0o700
    assert not list((fed / "edges").rglob("fernet.key")) and not list(
        (fed / "clients").rglob("fernet.key")
    )
    assert "offline" in (fed / "README.md").read_text()


def test_helm_values_pass_the_chart_schema(fed: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    for folder in service_folders(fed):
        values = yaml.safe_load((folder / "helm-values.yaml").read_text())
        jsonschema.validate(values, schema)
        enabled = [
            k for k in ("cloudCoordinator", "edgeAggregator", "clientAgent") if values[k]["enabled"]
        ]
        assert len(enabled) == 1
    edge = yaml.safe_load((fed / "edges/edge-eu-west/helm-values.yaml").read_text())[
        "edgeAggregator"
    ]
    assert (
        edge["region"] == "eu-west"
        and edge["tls"]["existingSecret"] == "hospitals-eu-edge-eu-west-tls"
    )
    script = (fed / "edges/edge-eu-west/k8s-secrets.sh").read_text()
    assert "create secret generic hospitals-eu-edge-eu-west-tls-0 " in script
    assert "tls.key=tls/edge-edge-eu-west-0.key" in script


def test_an_existing_folder_needs_force_and_must_be_inits(fed: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists; pick another folder, or pass --force"):
        init.main([str(EXAMPLE), "-o", str(fed)])
    before = (fed / "ca" / "ca.crt").read_bytes()
    copy_of = tmp_path / "again"
    init.main([str(EXAMPLE), "-o", str(copy_of)])
    assert init.main([str(EXAMPLE), "-o", str(copy_of), "--force"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="was not made by ffa-lora init"):
        init.main([str(EXAMPLE), "-o", str(other), "--force"])
    assert (other / "notes.txt").read_text() == "keep me"
    assert (fed / "ca" / "ca.crt").read_bytes() == before


def test_a_failure_while_writing_leaves_nothing(tmp_path: Path) -> None:
    spec = example()
    spec["edges"][1]["hosts"] = ["not a host!"]
    with pytest.raises(ConfigError, match=r"edges\[1\] \(edge-eu-north\): host 'not a host!'"):
        init.scaffold(parse_spec(spec), tmp_path / "fed")
    assert list(tmp_path.iterdir()) == []


def _set(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(example())
    node: Any = spec
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    if value is _DROP:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return spec


_DROP = object()
BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("no federation", _set("federation", _DROP), "federation: required field is missing"),
    (
        "bad federation",
        _set("federation", "Hospitals EU"),
        "federation: 'Hospitals EU' is not valid",
    ),
    (
        "bad client id",
        _set("clients.0.id", "Hospital_A"),
        "clients[0].id: 'Hospital_A' is not valid",
    ),
    (
        "unknown edge",
        _set("clients.2.edge", "edge-mars"),
        "clients[2] (hospital-c).edge names ['edge-mars']",
    ),
    ("duplicate ids", _set("clients.1.id", "hospital-a"), "repeated: hospital-a"),
    ("id shared across roles", _set("clients.1.id", "edge-eu-west"), "repeated: edge-eu-west"),
    ("no data", _set("clients.0.data", _DROP), "clients[0].data: required field is missing"),
    (
        "one client",
        _set("clients", [example()["clients"][0]]),
        "clients: List should have at least 2 items",
    ),
    ("no edges", _set("edges", []), "edges: List should have at least 1 item"),
    (
        "listening address",
        _set("coordinator.address", "0.0.0.0:50051"),
        "0.0.0.0 is a listening address",
    ),
    (
        "address without port",
        _set("edges.0.address", "edge.example.org"),
        "edges[0].address: 'edge.example.org' is not valid: write host:port",
    ),
    (
        "same address twice",
        _set("edges.1.address", "edge-eu-west.hospitals.example.org:50052"),
        "addresses (coordinator.address, edges[].address) must be unique",
    ),
    ("typo", _set("clients.0.label_colum", "x"), "clients[0].label_colum: unknown field"),
    ("labels in settings", _set("settings.labels", ["a", "b"]), "settings.labels is set by init"),
    (
        "model in settings",
        _set("settings.model", {"name_or_path": "x"}),
        "settings.model.name_or_path is set by init",
    ),
    (
        "bad setting",
        _set("settings.rounds.max_rounds", 0),
        "rounds.max_rounds: Input should be greater than or equal to 1",
    ),
    ("unknown setting", _set("settings.rounds.max_round", 3), "rounds.max_round: unknown field"),
    ("setting not a section", _set("settings.rounds", 5), "settings.rounds must be a mapping"),
    ("one label", _set("labels", ["yes"]), "labels: List should have at least 2 items"),
]


@pytest.mark.parametrize(("case", "spec", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_every_wrong_piece_of_the_spec_is_named(
    tmp_path: Path, case: str, spec: dict[str, Any], message: str
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as err:
        init.main([str(path), "-o", str(tmp_path / "fed")])
    assert message in str(err.value)
    assert not (tmp_path / "fed").exists()


def test_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; start from docs/init-spec.yaml"):
        init.main([str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "fed")])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        init.main([str(tmp_path / "list.yaml"), "-o", str(tmp_path / "fed")])


def test_key_holders_get_one_sealed_share_each_and_clients_pin_the_key(fed: Path) -> None:
    """The threshold key: each holder's folder holds only its own share, sealed with its own
    Fernet key; the coordinator also the public parameters; every client pins their key."""
    from ffa_lora.crypto import load_fernet_key
    from ffa_lora.crypto.threshold import ThresholdParams, load_key_share

    params = ThresholdParams.from_bytes((fed / "coordinator" / "keys" / "threshold.params").read_bytes())
    assert params.threshold == 2
    assert params.holders == ("coordinator/coordinator", "keyholder/keyholder-1", "keyholder/keyholder-2")
    holders = {"coordinator/coordinator": fed / "coordinator"} | {
        f"keyholder/{p.name}": p for p in sorted((fed / "keyholders").iterdir())}
    for holder, folder in holders.items():
        cfg = load_config(folder / "config.yaml")
        role = cfg.service
        share_file = cfg.coordinator.threshold.share_file if role == "coordinator" else cfg.keyholder.share_file  # type: ignore[union-attr]
        fernet = load_fernet_key(file=folder / "secrets" / "fernet.key")
        share = load_key_share(folder / share_file, fernet_key=fernet, expected_holder=holder)
        assert share.params == params
        assert sorted(p.name for p in (folder / "keys").iterdir()) == (
            ["share", "threshold.params"] if role == "coordinator" else ["share"])
        assert stat.S_IMODE((folder / "secrets" / "fernet.key").stat().st_mode) == 0o600
    other = holders["keyholder/keyholder-1"] / "secrets" / "fernet.key"
    with pytest.raises(Exception, match="Fernet"):  # a share opens only with its own holder's key
        load_key_share(fed / "coordinator" / "keys" / "share", fernet_key=load_fernet_key(file=other))
    for folder in sorted((fed / "clients").iterdir()):
        assert load_config(folder / "config.yaml").client.key_fingerprint == params.public_key.fingerprint  # type: ignore[union-attr]
    assert not list(fed.rglob(".ceremony"))
