"""Unit tests of services.common.certs: CA and certificate issuance, file checks, identity
parsing. The real handshake is tested in tests/integration/test_mtls.py.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ffa_lora.errors import ConfigError
from services.common import certs as pki

UTC = dt.UTC


# ---------------------------------------------------------------------------------------------
# helpers


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sign_with_ca(ca_dir: Path, out: Path, sans: list[x509.GeneralName]) -> tuple[Path, Path]:
    """A leaf signed by the federation CA with arbitrary SANs (what a buggy issuer might make)."""
    ca_cert = _cert(ca_dir / "ca.crt")
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "handmade")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    crt, k = out / "handmade.crt", out / "handmade.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return crt, k


# ---------------------------------------------------------------------------------------------
# init_ca


def test_init_ca_writes_p256_ca_with_private_key_0600(ca_dir: Path) -> None:
    crt, key = ca_dir / "ca.crt", ca_dir / "ca.key"
    assert _mode(key) == 0o600
    assert _mode(crt) == 0o644
    cert = _cert(crt)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://ffa-lora"]
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3650)
    assert not list(ca_dir.glob(".*.tmp")), "temporary files left behind"


def test_init_ca_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    pki.init_ca(tmp_path)
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(pki.TLSFileError, match="already exists"):
        pki.init_ca(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == before
    pki.init_ca(tmp_path, overwrite=True)
    assert (tmp_path / "ca.key").read_bytes() != before
    assert _mode(tmp_path / "ca.key") == 0o600


def test_init_ca_refuses_when_only_the_key_exists(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_text("old")
    with pytest.raises(pki.TLSFileError, match="ca.key already exists"):
        pki.init_ca(tmp_path)


@pytest.mark.parametrize("federation", ["", "FFA", "under_score", "-lead", "a" * 64, "a/b"])
def test_init_ca_rejects_bad_federation(tmp_path: Path, federation: str) -> None:
    with pytest.raises(ConfigError, match="federation"):
        pki.init_ca(tmp_path, federation=federation)
    assert not (tmp_path / "ca.key").exists()


@pytest.mark.parametrize("days", [0, -1, True, 1.5])
def test_init_ca_rejects_bad_days(tmp_path: Path, days: object) -> None:
    with pytest.raises(ConfigError, match="days"):
        pki.init_ca(tmp_path, days=days)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# issue_certificate


@pytest.mark.parametrize("role", pki.ROLES)
def test_issue_certificate_carries_identity_and_role_specific_names(
        ca_dir: Path, tmp_path: Path, role: str) -> None:
    crt, key = pki.issue_certificate(ca_dir, tmp_path, role=role, id="site.1_a-b")
    assert (crt.name, key.name) == (f"{role}-site.1_a-b.crt", f"{role}-site.1_a-b.key")
    assert _mode(key) == 0o600 and _mode(crt) == 0o644
    cert = _cert(crt)
    cert.verify_directly_issued_by(_cert(ca_dir / "ca.crt"))
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://ffa-lora/{role}/site.1_a-b"]
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    if role in pki.SERVER_ROLES:
        assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        # the two pinning names only: no localhost, no loopback address unless asked for
        assert sans.get_values_for_type(x509.DNSName) == [
            f"site.1_a-b.{role}.ffa-lora.ffa-lora.invalid", f"{role}.ffa-lora.ffa-lora.invalid"]
        assert sans.get_values_for_type(x509.IPAddress) == []
    else:
        assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert sans.get_values_for_type(x509.DNSName) == []
        assert sans.get_values_for_type(x509.IPAddress) == []
    assert pki.identity_from_certificate(cert) == pki.PeerIdentity(role=role, id="site.1_a-b")


def test_issue_certificate_custom_hosts(ca_dir: Path, tmp_path: Path) -> None:
    crt, _ = pki.issue_certificate(ca_dir, tmp_path, role="edge", id="eu",
                                   hosts=["ffa-lora-edge-eu.ns.svc", "::1", "10.0.0.7"])
    sans = _sans(_cert(crt))
    assert sans.get_values_for_type(x509.DNSName) == [
        "ffa-lora-edge-eu.ns.svc", "eu.edge.ffa-lora.ffa-lora.invalid", "edge.ffa-lora.ffa-lora.invalid"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("::1"), ipaddress.ip_address("10.0.0.7")]


@pytest.mark.parametrize("host", ["*.svc", "a..b", "", "bad host",
                                  "main.coordinator.ffa-lora.ffa-lora.invalid", "coordinator.ffa-lora.ffa-lora.invalid"])
def test_issue_certificate_rejects_bad_or_reserved_hosts(
        ca_dir: Path, tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="host"):
        pki.issue_certificate(ca_dir, tmp_path, role="edge", id="eu", hosts=[host])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("role", ["admin", "Client", "", "edge "])
def test_issue_certificate_rejects_unknown_role(ca_dir: Path, tmp_path: Path, role: str) -> None:
    with pytest.raises(ConfigError, match="client, edge, coordinator"):
        pki.issue_certificate(ca_dir, tmp_path, role=role, id="x")


@pytest.mark.parametrize("bad_id", ["", "a/b", "x" * 65, ".", "..", "a b", "bänk", "a:b", "*"])
def test_issue_certificate_rejects_bad_id(ca_dir: Path, tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(ConfigError, match="1-64 characters"):
        pki.issue_certificate(ca_dir, tmp_path, role="client", id=bad_id)
    assert list(tmp_path.iterdir()) == []


def test_issue_certificate_accepts_64_character_id(ca_dir: Path, tmp_path: Path) -> None:
    crt, _ = pki.issue_certificate(ca_dir, tmp_path, role="coordinator", id="c" * 64)
    assert pki.identity_from_certificate(_cert(crt)).id == "c" * 64


def test_issue_certificate_refuses_to_overwrite_unless_asked(
        ca_dir: Path, tmp_path: Path) -> None:
    _, key = pki.issue_certificate(ca_dir, tmp_path, role="client", id="a")
    first = key.read_bytes()
    with pytest.raises(pki.TLSFileError, match="already exists"):
        pki.issue_certificate(ca_dir, tmp_path, role="client", id="a")
    assert key.read_bytes() == first
    pki.issue_certificate(ca_dir, tmp_path, role="client", id="a", overwrite=True)
    assert key.read_bytes() != first


def test_issue_certificate_validity_overrides(ca_dir: Path, tmp_path: Path) -> None:
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    end = dt.datetime(2020, 1, 2, tzinfo=UTC)
    crt, _ = pki.issue_certificate(ca_dir, tmp_path, role="client", id="old",
                                   not_before=start, not_after=end)
    cert = _cert(crt)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (start, end)


def test_issue_certificate_default_validity(ca_dir: Path, tmp_path: Path) -> None:
    crt, _ = pki.issue_certificate(ca_dir, tmp_path, role="client", id="a", days=30)
    cert = _cert(crt)
    now = dt.datetime.now(UTC)
    assert cert.not_valid_before_utc <= now
    assert abs(cert.not_valid_after_utc - (now + dt.timedelta(days=30))) < dt.timedelta(minutes=1)


@pytest.mark.parametrize("kwargs, match", [
    ({"not_before": dt.datetime(2020, 1, 1)}, "timezone-aware"),
    ({"not_before": dt.datetime(2020, 1, 2, tzinfo=UTC),
      "not_after": dt.datetime(2020, 1, 1, tzinfo=UTC)}, "later than"),
    ({"days": 4000}, "outlive the CA"),
    ({"days": 0}, "days"),
])
def test_issue_certificate_rejects_bad_validity(
        ca_dir: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pki.issue_certificate(ca_dir, tmp_path, role="client", id="a", **kwargs)


def test_issue_certificate_missing_or_mismatched_ca(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(pki.TLSFileError, match=r"CA certificate file .*ca.crt does not exist"):
        pki.issue_certificate(tmp_path / "nowhere", tmp_path, role="client", id="a")
    mixed = tmp_path / "mixed"
    pki.init_ca(mixed)
    (mixed / "ca.key").write_bytes((ca_dir / "ca.key").read_bytes())
    with pytest.raises(pki.TLSFileError, match="does not belong to CA certificate"):
        pki.issue_certificate(mixed, tmp_path, role="client", id="a")


# ---------------------------------------------------------------------------------------------
# TLSFiles.load


def test_load_good_files(client_files: pki.TLSFiles) -> None:
    loaded = client_files.load()
    assert loaded.identity == pki.PeerIdentity("client", "bank-a")
    assert loaded.federation == "ffa-lora"
    assert loaded.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_for_identity_layout(ca_dir: Path) -> None:
    pki.issue_certificate(ca_dir, ca_dir, role="edge", id="layout")
    files = pki.TLSFiles.for_identity(ca_dir, role="edge", id="layout")
    assert files == pki.TLSFiles(ca_dir / "ca.crt", ca_dir / "edge-layout.crt",
                                 ca_dir / "edge-layout.key")
    assert files.load().identity == pki.PeerIdentity("edge", "layout")


@pytest.mark.parametrize("which, label", [("ca", "CA certificate"), ("cert", "certificate"),
                                          ("key", "private key")])
def test_load_names_the_missing_file(client_files: pki.TLSFiles, which: str, label: str) -> None:
    path = getattr(client_files, which)
    path.rename(path.with_suffix(".gone"))
    with pytest.raises(pki.TLSFileError, match=f"{label} file {path} does not exist"):
        client_files.load()


@pytest.mark.parametrize("which, label", [("ca", "CA certificate"), ("cert", "certificate"),
                                          ("key", "private key")])
def test_load_names_the_corrupt_file_without_echoing_it(
        client_files: pki.TLSFiles, tmp_path: Path, which: str, label: str) -> None:
    original = getattr(client_files, which)
    broken = tmp_path / f"broken-{which}.pem"
    broken.write_bytes(original.read_bytes()[:120])  # truncated PEM
    files = pki.TLSFiles(**{**vars(client_files), which: broken})
    with pytest.raises(pki.TLSFileError, match=f"{label} file {broken} is not a valid") as info:
        files.load()
    assert "MI" not in str(info.value)  # no base64 key/cert material in the message


def test_load_rejects_key_of_another_certificate(
        client_files: pki.TLSFiles, ca_dir: Path, tmp_path: Path) -> None:
    _, other_key = pki.issue_certificate(ca_dir, tmp_path / "o", role="client", id="other")
    files = pki.TLSFiles(client_files.ca, client_files.cert, other_key)
    with pytest.raises(pki.TLSFileError, match="does not belong to certificate"):
        files.load()


def test_load_rejects_certificate_of_a_foreign_ca(
        client_files: pki.TLSFiles, foreign_ca_dir: Path) -> None:
    files = pki.TLSFiles(foreign_ca_dir / "ca.crt", client_files.cert, client_files.key)
    with pytest.raises(pki.TLSFileError, match="not issued by the CA"):
        files.load()


def test_load_rejects_expired_and_not_yet_valid(ca_dir: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(UTC)
    crt, key = pki.issue_certificate(ca_dir, tmp_path, role="client", id="old",
                                     not_before=now - dt.timedelta(days=2),
                                     not_after=now - dt.timedelta(days=1))
    with pytest.raises(pki.TLSFileError, match="valid only from .*reissue"):
        pki.TLSFiles(ca_dir / "ca.crt", crt, key).load()
    crt, key = pki.issue_certificate(ca_dir, tmp_path, role="client", id="future",
                                     not_before=now + dt.timedelta(days=1))
    with pytest.raises(pki.TLSFileError, match="valid only from"):
        pki.TLSFiles(ca_dir / "ca.crt", crt, key).load()


def test_load_rejects_ca_signed_certificate_without_identity(
        ca_dir: Path, tmp_path: Path) -> None:
    crt, key = sign_with_ca(ca_dir, tmp_path, [x509.DNSName("localhost")])
    with pytest.raises(pki.TLSFileError, match="exactly one spiffe:// URI identity, found 0"):
        pki.TLSFiles(ca_dir / "ca.crt", crt, key).load()


def test_load_accepts_a_chain_and_a_ca_bundle(
        client_files: pki.TLSFiles, foreign_ca_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes((foreign_ca_dir / "ca.crt").read_bytes() + client_files.ca.read_bytes())
    chain = tmp_path / "chain.crt"
    chain.write_bytes(client_files.cert.read_bytes() + client_files.ca.read_bytes())
    loaded = pki.TLSFiles(bundle, chain, client_files.key).load()
    assert loaded.identity == pki.PeerIdentity("client", "bank-a")


# ---------------------------------------------------------------------------------------------
# identity parsing


@pytest.mark.parametrize("uri, expected", [
    ("spiffe://ffa-lora/client/bank-a", pki.PeerIdentity("client", "bank-a")),
    ("spiffe://ffa-lora/coordinator/main", pki.PeerIdentity("coordinator", "main")),
    ("spiffe://x/edge/eu.west_1", pki.PeerIdentity("edge", "eu.west_1")),
])
def test_parse_spiffe_uri_good(uri: str, expected: pki.PeerIdentity) -> None:
    assert pki.parse_spiffe_uri(uri) == expected


@pytest.mark.parametrize("uri", [
    "https://ffa-lora/client/a", "spiffe://ffa-lora/client", "spiffe://ffa-lora/client/a/b",
    "spiffe://ffa-lora/admin/a", "spiffe://ffa-lora/client/a%20b", "spiffe://FFA/client/a",
    "spiffe://ffa-lora/client/..", "spiffe://ffa-lora//a", "",
])
def test_parse_spiffe_uri_malformed(uri: str) -> None:
    with pytest.raises(pki.PeerAuthError):
        pki.parse_spiffe_uri(uri)


def test_parse_spiffe_uri_other_federation() -> None:
    with pytest.raises(pki.PeerAuthError, match="another federation"):
        pki.parse_spiffe_uri("spiffe://other/client/a", federation="ffa-lora")


def test_identity_from_certificate_rejects_two_identities(ca_dir: Path, tmp_path: Path) -> None:
    crt, _ = sign_with_ca(ca_dir, tmp_path, [
        x509.UniformResourceIdentifier("spiffe://ffa-lora/client/a"),
        x509.UniformResourceIdentifier("spiffe://ffa-lora/coordinator/b")])
    with pytest.raises(pki.PeerAuthError, match="found 2"):
        pki.identity_from_certificate(_cert(crt))


def test_identity_from_certificate_without_sans(ca_dir: Path, tmp_path: Path) -> None:
    crt, _ = sign_with_ca(ca_dir, tmp_path, [])
    with pytest.raises(pki.PeerAuthError, match="no subject alternative names"):
        pki.identity_from_certificate(_cert(crt))


def test_identity_dns_name() -> None:
    assert pki.identity_dns_name("edge", "EU-1", federation="ffa-lora") == \
        "eu-1.edge.ffa-lora.ffa-lora.invalid"
    with pytest.raises(ConfigError):
        pki.identity_dns_name("boss", "x", federation="ffa-lora")
