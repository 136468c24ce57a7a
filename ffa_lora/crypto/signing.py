"""Signed statements of the federation: client contributions, edge partial sums, the key.

Every party signs with the private key of its X.509 certificate (issued by the federation
CA: EC P-256, ECDSA with SHA-256; Ed25519 and RSA-PSS keys work too). A verifier checks,
in this order, and says which check failed:

1. the signer's certificate was issued by the federation CA and is valid now;
2. it names exactly the identity expected (its ``spiffe://<federation>/<role>/<id>`` URI);
3. the signature over the statement's canonical bytes verifies with its key.

Statements are canonical byte strings (domain tag, then fixed-order, length-prefixed
fields), so a signature over one kind of statement can never be read as another.

* :class:`ContributionClaim` — a client's update: federation, client id, round, phase, rank,
  weight claim, key fingerprint and the digest of its ciphertext vector
  (:func:`~ffa_lora.crypto.canonical.vector_digest`).
* :class:`PartialClaim` — an edge's partial sum: federation, edge id, round, phase, the
  digest of the partial and its contributors (client id, weight, digest of the client's
  signed claim), so a key holder can check that the edge lists only signed contributions.
* :class:`KeyAnnouncement` — the coordinator's public key (and threshold parameters),
  which clients accept only with a valid coordinator signature and, when configured, the
  pinned fingerprint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ffa_lora.crypto.canonical import DIGEST_SIZE, vector_digest
from ffa_lora.crypto.keys import PublicKey
from ffa_lora.crypto.threshold.ceremony import ThresholdParams
from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.errors import CryptoError, SignatureError

__all__ = [
    "ContributionClaim",
    "Contributor",
    "KeyAnnouncement",
    "PartialClaim",
    "contributors_of",
    "round_context",
    "sign_statement",
    "verify_statement",
]

_CLOCK_SKEW = dt.timedelta(minutes=5)
_MAX_TEXT = 1024


def _text(value: str, name: str) -> bytes:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise CryptoError(f"{name} must be a non-empty string of at most {_MAX_TEXT} characters")
    b = value.encode()
    return struct.pack(">H", len(b)) + b


def _uint(value: int, name: str, bits: int = 64) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise CryptoError(f"{name} must be an integer in [0, 2^{bits}), got {value!r}")
    return value.to_bytes(bits // 8, "big")


def _digest_field(value: bytes, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != DIGEST_SIZE:
        raise CryptoError(f"{name} must be a {DIGEST_SIZE}-byte SHA-256 digest")
    return bytes(value)


def _fingerprint_field(value: str, name: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != DIGEST_SIZE:
        raise CryptoError(f"{name} must be a SHA-256 hex digest (64 hex characters)")
    return raw


def _blob(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


class _Reader:
    """Reads the fields that :func:`_text`, :func:`_uint` and :func:`_digest_field` wrote."""

    def __init__(self, data: bytes, tag: bytes, what: str) -> None:
        if not isinstance(data, (bytes, bytearray)) or not bytes(data).startswith(tag):
            raise SignatureError(f"{what} is malformed (not a statement of this kind)")
        self.data, self.off, self.what = bytes(data), len(tag), what

    def _take(self, n: int) -> bytes:
        if self.off + n > len(self.data):
            raise SignatureError(f"{self.what} is truncated")
        out = self.data[self.off : self.off + n]
        self.off += n
        return out

    def text(self) -> str:
        (n,) = struct.unpack(">H", self._take(2))
        try:
            return self._take(n).decode()
        except UnicodeDecodeError:
            raise SignatureError(f"{self.what} is malformed (text field)") from None

    def uint(self, bits: int = 64) -> int:
        return int.from_bytes(self._take(bits // 8), "big")

    def digest(self) -> bytes:
        return self._take(DIGEST_SIZE)

    def end(self) -> None:
        if self.off != len(self.data):
            raise SignatureError(f"{self.what} has trailing bytes")


_CONTRIBUTION_TAG = b"ffa-lora/contribution/v1\x00"
_PARTIAL_TAG = b"ffa-lora/partial-sum/v1\x00"


@dataclass(frozen=True)
class ContributionClaim:
    """What a client signs about its encrypted update for one round.

    ``weight`` is the weight its task assigned (before any staleness factor); ``base_version``
    the adapter version it trained from (the staleness reference in asynchronous mode).
    """

    federation: str
    client_id: str
    round: int
    phase: str
    rank: int
    weight: int
    key_fingerprint: str
    vector_digest: bytes
    base_version: int = 0

    @classmethod
    def for_vector(cls, vec: CiphertextVector, *, federation: str, client_id: str, round: int,
                   phase: str, rank: int, weight: int, base_version: int = 0) -> ContributionClaim:
        """The claim for ``vec`` (its key fingerprint and canonical digest filled in)."""
        return cls(federation, client_id, round, phase, rank, weight, vec.fingerprint,
                   vector_digest(vec), base_version)

    def canonical_bytes(self) -> bytes:
        """The signed bytes (domain tag and every field, in a fixed order)."""
        return b"".join([
            _CONTRIBUTION_TAG, _text(self.federation, "federation"),
            _text(self.client_id, "client id"), _uint(self.round, "round"),
            _text(self.phase, "phase"), _uint(self.rank, "rank", 32),
            _uint(self.weight, "weight", 32),
            _fingerprint_field(self.key_fingerprint, "key fingerprint"),
            _digest_field(self.vector_digest, "vector digest"),
            _uint(self.base_version, "base version"),
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> ContributionClaim:
        """Parse :meth:`canonical_bytes`; :class:`SignatureError` if malformed."""
        r = _Reader(data, _CONTRIBUTION_TAG, "a contribution claim")
        claim = cls(r.text(), r.text(), r.uint(), r.text(), r.uint(32), r.uint(32),
                    r.digest().hex(), r.digest(), r.uint())
        r.end()
        return claim

    def digest(self) -> bytes:
        """SHA-256 of :meth:`canonical_bytes` (how partial claims refer to it)."""
        return hashlib.sha256(self.canonical_bytes()).digest()


@dataclass(frozen=True)
class Contributor:
    """One entry of an edge's contributor list."""

    client_id: str
    weight: int
    claim_digest: bytes


@dataclass(frozen=True)
class PartialClaim:
    """What an edge signs about the partial sum it forwards for one round.

    ``weight_total`` must equal the sum of the contributors' weights; contributors are
    listed in client-id order, each client at most once.
    """

    federation: str
    edge_id: str
    round: int
    phase: str
    key_fingerprint: str
    vector_digest: bytes
    weight_total: int
    contributors: tuple[Contributor, ...]
    adapter_version: int = 0  # the edge's round plan's (async: the staleness reference)

    def __post_init__(self) -> None:
        ids = [c.client_id for c in self.contributors]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise CryptoError("contributors must be listed once each, in client-id order")
        if sum(c.weight for c in self.contributors) != self.weight_total:
            raise CryptoError(
                f"weight_total {self.weight_total} is not the sum of the contributors' weights "
                f"({sum(c.weight for c in self.contributors)})")

    def canonical_bytes(self) -> bytes:
        """The signed bytes."""
        parts = [_PARTIAL_TAG, _text(self.federation, "federation"),
                 _text(self.edge_id, "edge id"), _uint(self.round, "round"),
                 _text(self.phase, "phase"), _uint(self.adapter_version, "adapter version"),
                 _fingerprint_field(self.key_fingerprint, "key fingerprint"),
                 _digest_field(self.vector_digest, "vector digest"),
                 _uint(self.weight_total, "weight total"),
                 _uint(len(self.contributors), "contributor count", 32)]
        for c in self.contributors:
            parts += [_text(c.client_id, "client id"), _uint(c.weight, "weight", 32),
                      _digest_field(c.claim_digest, "claim digest")]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> PartialClaim:
        """Parse :meth:`canonical_bytes`; :class:`SignatureError` if malformed or inconsistent
        (contributors out of order, weights that do not add up)."""
        r = _Reader(data, _PARTIAL_TAG, "a partial-sum claim")
        federation, edge_id, round_, phase, adapter_version = (
            r.text(), r.text(), r.uint(), r.text(), r.uint())
        fingerprint, digest, total, count = r.digest().hex(), r.digest(), r.uint(), r.uint(32)
        if count > len(data):
            raise SignatureError("a partial-sum claim is truncated")
        contributors = tuple(Contributor(r.text(), r.uint(32), r.digest()) for _ in range(count))
        r.end()
        try:
            return cls(federation, edge_id, round_, phase, fingerprint, digest, total,
                       contributors, adapter_version)
        except CryptoError as exc:
            raise SignatureError(f"a partial-sum claim is inconsistent: {exc}") from None


@dataclass(frozen=True)
class KeyAnnouncement:
    """The federation's encryption key as the coordinator publishes and signs it."""

    federation: str
    public_key: PublicKey
    threshold: ThresholdParams | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and self.threshold.public_key != self.public_key:
            raise CryptoError("threshold parameters belong to another public key")

    def canonical_bytes(self) -> bytes:
        """The signed bytes (federation, public key, threshold parameters if any)."""
        tp = self.threshold.to_bytes() if self.threshold is not None else b""
        return b"".join([b"ffa-lora/key-announcement/v1\x00",
                         _text(self.federation, "federation"),
                         _blob(self.public_key.to_bytes()), _blob(tp)])

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAnnouncement:
        """Parse :meth:`canonical_bytes`; :class:`SignatureError` if malformed."""
        tag = b"ffa-lora/key-announcement/v1\x00"
        try:
            if not data.startswith(tag):
                raise ValueError
            off = len(tag)
            (fl,) = struct.unpack_from(">H", data, off)
            federation = data[off + 2 : off + 2 + fl].decode()
            off += 2 + fl
            fields = []
            for _ in range(2):
                (ln,) = struct.unpack_from(">I", data, off)
                fields.append(data[off + 4 : off + 4 + ln])
                off += 4 + ln
            if off != len(data):
                raise ValueError
            pk = PublicKey.from_bytes(fields[0])
            tp = ThresholdParams.from_bytes(fields[1]) if fields[1] else None
        except (ValueError, struct.error, UnicodeDecodeError, CryptoError):
            raise SignatureError("the key announcement is malformed") from None
        return cls(federation, pk, tp)

    def verify(self, signature: bytes, *, certificate: x509.Certificate,
               ca_certificate: x509.Certificate, expected_signer_uri: str,
               pinned_fingerprint: str | None = None, federation: str | None = None,
               now: dt.datetime | None = None) -> None:
        """Accept this key only if the expected coordinator signed it (and it is the pinned
        key, when a pin is configured); :class:`SignatureError` says what did not match."""
        if federation is not None and self.federation != federation:
            raise SignatureError(f"the key is announced for federation '{self.federation}', "
                                 f"this party belongs to '{federation}'")
        verify_statement(self.canonical_bytes(), signature, certificate=certificate,
                         ca_certificate=ca_certificate, expected_uri=expected_signer_uri,
                         what="the federation key announcement", now=now)
        if pinned_fingerprint is not None and pinned_fingerprint.lower() != \
                self.public_key.fingerprint:
            raise SignatureError(
                f"the announced public key has fingerprint {self.public_key.fingerprint[:16]}…, "
                f"but this party is configured to accept only {pinned_fingerprint[:16]}…; "
                "refusing it (check the key pin in the configuration)")


def round_context(*, federation: str, round: int, phase: str, key_fingerprint: str) -> bytes:
    """Canonical bytes naming one round's decryption; decryption shares are bound to it."""
    return b"".join([b"ffa-lora/round-context/v1\x00", _text(federation, "federation"),
                     _uint(round, "round"), _text(phase, "phase"),
                     _fingerprint_field(key_fingerprint, "key fingerprint")])


def sign_statement(message: bytes, private_key: Any) -> bytes:
    """Sign canonical bytes with a certificate's private key (ECDSA-SHA256, Ed25519 or
    RSA-PSS-SHA256)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(message)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                     salt_length=padding.PSS.DIGEST_LENGTH),
                                hashes.SHA256())
    raise SignatureError(f"cannot sign with a {type(private_key).__name__}: use the EC, Ed25519 "
                         "or RSA key of the party's certificate")


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _check_certificate(cert: x509.Certificate, ca: x509.Certificate, expected_uri: str,
                       what: str, now: dt.datetime | None) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise SignatureError(f"the certificate that signed {what} was not issued by the "
                             "federation CA") from None
    now = now or dt.datetime.now(dt.UTC)
    if now + _CLOCK_SKEW < cert.not_valid_before_utc:
        raise SignatureError(f"the certificate that signed {what} is not valid before "
                             f"{cert.not_valid_before_utc.isoformat()}")
    if now - _CLOCK_SKEW > cert.not_valid_after_utc:
        raise SignatureError(f"the certificate that signed {what} expired at "
                             f"{cert.not_valid_after_utc.isoformat()}")
    uris = [u for u in _uris(cert) if u.lower().startswith("spiffe://")]
    if uris != [expected_uri]:
        found = ", ".join(uris) or "no identity"
        raise SignatureError(f"{what} is signed by {found}, expected {expected_uri}")


def verify_statement(message: bytes, signature: bytes, *, certificate: x509.Certificate,
                     ca_certificate: x509.Certificate, expected_uri: str, what: str,
                     now: dt.datetime | None = None) -> None:
    """Check that ``expected_uri``'s CA-issued, currently valid certificate signed ``message``.

    Args:
        what: the statement, for messages (e.g. "the contribution of client site-1").

    Raises:
        SignatureError: naming the check that failed (issuer, validity, identity, signature).
    """
    _check_certificate(certificate, ca_certificate, expected_uri, what, now)
    key = certificate.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                       salt_length=padding.PSS.DIGEST_LENGTH),
                       hashes.SHA256())
        else:
            raise SignatureError(f"the certificate of {expected_uri} has an unsupported key type")
    except InvalidSignature:
        raise SignatureError(
            f"the signature on {what} does not verify with the key of {expected_uri}: the "
            "statement was changed after signing, or someone else signed it") from None


def contributors_of(claims: Sequence[ContributionClaim], weights: Sequence[int] | None = None
                    ) -> tuple[Contributor, ...]:
    """Contributor entries (client-id order) for an edge's :class:`PartialClaim`."""
    ws = list(weights) if weights is not None else [c.weight for c in claims]
    entries = [Contributor(c.client_id, w, c.digest()) for c, w in zip(claims, ws)]
    return tuple(sorted(entries, key=lambda e: e.client_id))
