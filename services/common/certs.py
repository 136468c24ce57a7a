"""The federation's certificates: a private CA, role certificates, SPIFFE identities, and
the checks that a CA / certificate / key triple on disk belongs together.

Every certificate is issued by the federation CA (:func:`init_ca`, EC P-256) and names exactly
one peer in a URI subject-alternative name ``spiffe://<federation>/<role>/<id>``, role one of
:data:`ROLES`. Server certificates (edge, coordinator) also carry two pinning names:
``<role>.<federation>.ffa-lora.invalid`` (:func:`role_dns_name`: "a server of this role in this
federation") and ``<id>.<role>.<federation>.ffa-lora.invalid`` (:func:`identity_dns_name`:
"this very server"). The services always verify one of them (``ssl_target_name_override``),
never the host name they dialled: an edge certificate can then never pass for the coordinator,
whatever address it answers on. DNS/IP names (``hosts``) are added only when asked for, for
tools that dial by host name. Client certificates are good for TLS client authentication only.
A peer's role and id are read only from its verified certificate, never from request fields or
metadata.

:meth:`TLSFiles.load` refuses an expired, foreign or identity-less local certificate up front
with a clear :class:`TLSFileError`. Key material never appears in errors or logs; messages name
the file and the fix. Nothing here imports gRPC: :mod:`services.common.tls` turns these files
into gRPC credentials.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ffa_lora.errors import ConfigError, FFALoraError
from ffa_lora.files import atomic_write

__all__ = [
    "CA_CERT_NAME",
    "CA_KEY_NAME",
    "ROLES",
    "SERVER_ROLES",
    "LoadedTLS",
    "PeerAuthError",
    "PeerIdentity",
    "TLSFileError",
    "TLSFiles",
    "certificate_paths",
    "check_federation",
    "check_role",
    "identity_dns_name",
    "identity_from_certificate",
    "init_ca",
    "issue_certificate",
    "parse_spiffe_uri",
    "role_dns_name",
    "spiffe_uri",
]

ROLES: tuple[str, ...] = ("client", "edge", "coordinator", "keyholder")
"""Every role a certificate can carry. A ``keyholder`` holds one share of the federation's
threshold key and connects out to the coordinator (TLS client authentication only)."""

SERVER_ROLES: tuple[str, ...] = ("edge", "coordinator")
"""Roles that run gRPC servers; their certificates also allow TLS server authentication."""

CA_CERT_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A single DNS label, so that the federation is both a SPIFFE trust domain and a DNS label.
_FEDERATION_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SPIFFE_RE = re.compile(r"spiffe://([^/]+)/([^/]+)/([^/]+)")
_IDENTITY_DNS_SUFFIX = "ffa-lora.invalid"  # .invalid: reserved, never resolves (RFC 6761)
_CLOCK_SKEW = dt.timedelta(minutes=5)


class TLSFileError(ConfigError):
    """A CA, certificate or key file is missing, unreadable, corrupt, mismatched or expired."""


class PeerAuthError(FFALoraError):
    """The peer of a call has no verified certificate carrying a valid federation identity."""


@dataclass(frozen=True)
class PeerIdentity:
    """The authenticated role and id of a peer, as named in its certificate."""

    role: str
    id: str

    def __str__(self) -> str:
        return f"{self.role}/{self.id}"


# ---------------------------------------------------------------------------------------------
# validation helpers


def check_role(role: str) -> str:
    """Return ``role`` when it is one of :data:`ROLES`; raise :class:`ConfigError` otherwise."""
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(ROLES)}; pick one of them")
    return role


def _check_id(peer_id: str) -> str:
    if not isinstance(peer_id, str) or not _ID_RE.fullmatch(peer_id) or peer_id in (".", ".."):
        shown = repr(peer_id)[:80]
        raise ConfigError(f"id {shown} is invalid: use 1-64 characters from A-Z a-z 0-9 . _ - "
                          "(not '.' or '..'), e.g. 'bank-a'")
    return peer_id


def check_federation(federation: str) -> str:
    """Return ``federation`` when it is a valid federation name (one DNS label)."""
    if not isinstance(federation, str) or not _FEDERATION_RE.fullmatch(federation):
        raise ConfigError(
            f"federation {federation!r} must be 1-63 characters of a-z 0-9 and '-' "
            "(not at either end), e.g. 'ffa-lora'"
        )
    return federation


def _check_days(name: str, days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"{name} must be a whole number of days >= 1 (got {days!r})")
    return days


def spiffe_uri(role: str, peer_id: str, *, federation: str) -> str:
    """Return the URI SAN ``spiffe://<federation>/<role>/<id>`` that names a peer."""
    return f"spiffe://{check_federation(federation)}/{check_role(role)}/{_check_id(peer_id)}"


def identity_dns_name(role: str, peer_id: str, *, federation: str) -> str:
    """Return the DNS SAN that pins a server's role and id (use as ``server_name``).

    DNS names compare case-insensitively, so give servers ids that differ by more than case.
    """
    check_role(role)
    _check_id(peer_id)
    return f"{peer_id}.{role}.{check_federation(federation)}.{_IDENTITY_DNS_SUFFIX}".lower()


def role_dns_name(role: str, *, federation: str) -> str:
    """Return the DNS SAN every server certificate of ``role`` in ``federation`` carries
    (``<role>.<federation>.ffa-lora.invalid``): the name a caller pins when any server of that
    role will do (a client and the edges of its list)."""
    if check_role(role) not in SERVER_ROLES:
        raise ConfigError(f"role {role!r} runs no server; pin one of {', '.join(SERVER_ROLES)}")
    return f"{role}.{check_federation(federation)}.{_IDENTITY_DNS_SUFFIX}"


def _split_spiffe(uri: str, *, federation: str | None = None) -> tuple[str, PeerIdentity]:
    m = _SPIFFE_RE.fullmatch(uri)
    if m is None:
        raise PeerAuthError(
            "certificate identity is not of the form spiffe://<federation>/<role>/<id>")
    trust_domain, role, peer_id = m.groups()
    if not _FEDERATION_RE.fullmatch(trust_domain):
        raise PeerAuthError("certificate identity has a malformed federation name")
    if federation is not None and trust_domain != federation:
        raise PeerAuthError("certificate identity belongs to another federation")
    if role not in ROLES:
        raise PeerAuthError("certificate identity names an unknown role")
    if not _ID_RE.fullmatch(peer_id) or peer_id in (".", ".."):
        raise PeerAuthError("certificate identity has a malformed id")
    return trust_domain, PeerIdentity(role=role, id=peer_id)


def parse_spiffe_uri(uri: str, *, federation: str | None = None) -> PeerIdentity:
    """Parse ``spiffe://<federation>/<role>/<id>``; raise :class:`PeerAuthError` if malformed.

    With ``federation`` given, an identity of any other federation is rejected too.
    """
    return _split_spiffe(uri, federation=federation)[1]


def _identity_uri(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerAuthError("certificate has no subject alternative names") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.lower().startswith("spiffe://")]
    if len(uris) != 1:
        raise PeerAuthError(
            f"certificate must carry exactly one spiffe:// URI identity, found {len(uris)}")
    return uris[0]


def identity_from_certificate(
    cert: x509.Certificate, *, federation: str | None = None
) -> PeerIdentity:
    """Return the identity in a certificate's single ``spiffe://`` URI SAN.

    Raises :class:`PeerAuthError` when there is no such SAN, more than one, or it is malformed
    (or belongs to another federation than ``federation``, when given).
    """
    return parse_spiffe_uri(_identity_uri(cert), federation=federation)


# ---------------------------------------------------------------------------------------------
# files


def _write_file(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write ``data`` atomically with ``mode``; never leaves a half-written file."""
    if path.exists() and not overwrite:
        raise TLSFileError(f"{path} already exists; pass overwrite=True (--force) to replace it")
    atomic_write(path, data, mode=mode)


def _read_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSFileError(f"{what} file {path} does not exist; check the path or issue it "
                           "with `ffa-lora certs`") from None
    except OSError as e:
        raise TLSFileError(f"{what} file {path} cannot be read ({e.strerror})") from None


def _load_certs(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    """Read a PEM file holding one or more certificates (a leaf and its chain, or a bundle)."""
    data = _read_file(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TLSFileError(f"{what} file {path} is not a valid PEM certificate (corrupt or "
                           "truncated?); reissue it")
    return data, certs


def _load_key(path: Path, what: str) -> tuple[bytes, Any]:
    data = _read_file(path, what)
    try:
        return data, serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TLSFileError(f"{what} file {path} is not a valid unencrypted PEM private key "
                           "(corrupt or truncated?); reissue it") from None


def _public_bytes(key_or_cert: Any) -> bytes:
    """DER SubjectPublicKeyInfo of a private key's or certificate's public key."""
    return bytes(key_or_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _federation_of_ca(ca_cert: x509.Certificate) -> str | None:
    """The federation named by a CA made with :func:`init_ca` (URI SAN spiffe://<fed>)."""
    try:
        san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        m = re.fullmatch(r"spiffe://([^/]+)", uri)
        if m and _FEDERATION_RE.fullmatch(m.group(1)):
            return m.group(1)
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def init_ca(out_dir: Path, *, federation: str = "ffa-lora", days: int = 3650,
            overwrite: bool = False) -> Path:
    """Create the federation CA in ``out_dir``: ``ca.crt`` (0644) and ``ca.key`` (0600).

    The CA key is EC P-256. Refuses to replace an existing CA unless ``overwrite`` is true
    (replacing it invalidates every certificate issued so far). Returns the CA cert path.
    """
    check_federation(federation)
    _check_days("days", days)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    crt_path, key_path = out_dir / CA_CERT_NAME, out_dir / CA_KEY_NAME
    if not overwrite:
        for p in (crt_path, key_path):
            if p.exists():
                raise TLSFileError(f"{p} already exists; refusing to replace the federation CA "
                                   "(pass overwrite=True / --force; all issued certificates "
                                   "then stop working)")
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{federation}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a crash between the two writes leaves no certificate without its key.
    _write_file(key_path, _key_pem(key), mode=0o600, overwrite=True)
    _write_file(crt_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644,
                overwrite=True)
    return crt_path


def certificate_paths(out_dir: Path, *, role: str, id: str) -> tuple[Path, Path]:
    """Return the ``(<role>-<id>.crt, <role>-<id>.key)`` paths in ``out_dir``."""
    stem = f"{check_role(role)}-{_check_id(id)}"
    return Path(out_dir) / f"{stem}.crt", Path(out_dir) / f"{stem}.key"


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host or len(host) > 253:
            raise ConfigError(f"host {host!r} must be a DNS name or an IP address")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
                            r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*", host):
            raise ConfigError(f"host {host!r} is neither an IP address nor a DNS name "
                              "(wildcards are not allowed)")
        if host.lower().endswith(_IDENTITY_DNS_SUFFIX):
            raise ConfigError(f"host {host!r} is reserved for identity names; drop it")
        names.append(x509.DNSName(host.lower()))
    return names


def issue_certificate(ca_dir: Path, out_dir: Path, *, role: str, id: str,
                      hosts: Sequence[str] | None = None, days: int = 365,
                      not_before: dt.datetime | None = None,
                      not_after: dt.datetime | None = None,
                      overwrite: bool = False) -> tuple[Path, Path]:
    """Issue a certificate for ``role``/``id`` signed by the CA in ``ca_dir``.

    Writes ``<role>-<id>.crt`` (0644) and ``<role>-<id>.key`` (0600, EC P-256) to ``out_dir``
    and returns their paths. The certificate carries the URI SAN
    ``spiffe://<federation>/<role>/<id>``. Server roles (edge, coordinator) may act as TLS
    server and client and get :func:`role_dns_name` and :func:`identity_dns_name` (the names
    the services pin) plus the DNS/IP SANs in ``hosts``, if any (none by default: a server
    certificate valid for ``localhost`` would let whoever holds it answer for any service
    dialled by that name); a ``client`` certificate is for TLS client authentication only and
    gets host SANs only if ``hosts`` is given. ``not_before`` /
    ``not_after`` (timezone-aware) override the validity window, e.g. for expired test
    certificates. Refuses to replace existing files unless ``overwrite`` is true.
    """
    check_role(role)
    _check_id(id)
    _check_days("days", days)
    ca_dir = Path(ca_dir)
    ca_pem_path, ca_key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    ca_cert = _load_certs(ca_pem_path, "CA certificate")[1][0]
    _, ca_key = _load_key(ca_key_path, "CA key")
    if _public_bytes(ca_key) != _public_bytes(ca_cert):
        raise TLSFileError(f"CA key {ca_key_path} does not belong to CA certificate "
                           f"{ca_pem_path}; restore the matching pair")
    federation = _federation_of_ca(ca_cert)
    if federation is None:
        raise TLSFileError(f"CA certificate {ca_pem_path} names no federation (URI SAN "
                           "spiffe://<federation>); create the CA with `ffa-lora certs init`")

    start = not_before if not_before is not None else _now() - _CLOCK_SKEW
    end = not_after if not_after is not None else _now() + dt.timedelta(days=days)
    for label, t in (("not_before", start), ("not_after", end)):
        if t.tzinfo is None:
            raise ConfigError(f"{label} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    if end <= start:
        raise ConfigError("not_after must be later than not_before")
    if end > ca_cert.not_valid_after_utc:
        raise ConfigError(f"the certificate would outlive the CA (which expires "
                          f"{ca_cert.not_valid_after_utc:%Y-%m-%d}); use fewer days or renew "
                          "the CA")

    is_server = role in SERVER_ROLES
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_uri(role, id, federation=federation))]
    sans += _host_names(hosts or [])
    if is_server:
        sans.append(x509.DNSName(identity_dns_name(role, id, federation=federation)))
        sans.append(x509.DNSName(role_dns_name(role, federation=federation)))
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if is_server:
        eku.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)

    crt_path, key_path = certificate_paths(out_dir, role=role, id=id)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not overwrite:
        for p in (crt_path, key_path):
            if p.exists():
                raise TLSFileError(f"{p} already exists; pass overwrite=True (--force) to "
                                   "reissue it")
    key = _new_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_file(key_path, _key_pem(key), mode=0o600, overwrite=True)
    _write_file(crt_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644,
                overwrite=True)
    return crt_path, key_path


@dataclass(frozen=True)
class LoadedTLS:
    """PEM bytes of a checked CA/cert/key triple and the identity the certificate names."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    identity: PeerIdentity
    federation: str


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the federation CA certificate and this peer's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def for_identity(cls, certs_dir: Path, *, role: str, id: str) -> TLSFiles:
        """Files laid out by ``init_ca``/``issue_certificate`` in one ``certs_dir``."""
        crt, key = certificate_paths(certs_dir, role=role, id=id)
        return cls(ca=Path(certs_dir) / CA_CERT_NAME, cert=crt, key=key)

    def load(self, *, now: dt.datetime | None = None) -> LoadedTLS:
        """Read and check the three files; raise :class:`TLSFileError` naming the bad one.

        Checks: each file exists and parses; the key belongs to the (first) certificate; the
        certificate chains to a CA in the CA file (through any intermediates that follow it in
        its file); it is valid now; it names exactly one ``spiffe://`` identity, and that
        identity's federation is the CA's (when the CA names one). These checks give early,
        clear errors; the authoritative verification is the TLS handshake's.
        """
        ca_pem, cas = _load_certs(Path(self.ca), "CA certificate")
        cert_pem, chain = _load_certs(Path(self.cert), "certificate")
        key_pem, key = _load_key(Path(self.key), "private key")
        cert = chain[0]
        if _public_bytes(key) != _public_bytes(cert):
            raise TLSFileError(f"private key {self.key} does not belong to certificate "
                               f"{self.cert}; use the key issued with it")
        top = cert
        for intermediate in chain[1:]:
            if not _issued_by(top, intermediate):
                break
            top = intermediate
        issuers = [ca for ca in cas if _issued_by(top, ca)]
        if not issuers:
            raise TLSFileError(f"certificate {self.cert} was not issued by the CA in {self.ca}; "
                               "reissue it from this federation's CA")
        t = now or _now()
        if not cert.not_valid_before_utc <= t <= cert.not_valid_after_utc:
            raise TLSFileError(
                f"certificate {self.cert} is valid only from "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; reissue it")
        try:
            federation, identity = _split_spiffe(_identity_uri(cert),
                                                 federation=_federation_of_ca(issuers[0]))
        except PeerAuthError as e:
            raise TLSFileError(f"certificate {self.cert}: {e}") from None
        return LoadedTLS(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem,
                         identity=identity, federation=federation)
