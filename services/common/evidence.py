"""Signed statements in the services: who must have signed what, and the checks that a key
holder (and the coordinator, before it asks anyone) runs on a decrypt request.

The statements themselves and the cryptographic checks are the core's
(:mod:`ffa_lora.crypto.signing`, :mod:`ffa_lora.crypto.evidence`); here they meet the
federation's certificates: the expected identity of each signer is
``spiffe://<trust domain>/<role>/<id>``, the trust domain being the one the federation CA
names. Malformed statements and failed checks become typed refusals with a stable reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ffa_lora.crypto.evidence import (
    EvidenceError,
    RoundPolicy,
    SignedContribution,
    SignedPartial,
)
from ffa_lora.crypto.signing import (
    ContributionClaim,
    KeyAnnouncement,
    PartialClaim,
    sign_statement,
)
from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.errors import SignatureError
from services.common import domain as d
from services.common.certs import LoadedTLS, spiffe_uri
from services.common.rejections import InvalidMessage, Rejection, Unauthenticated, WrongState

__all__ = [
    "Identities",
    "Signer",
    "load_certificate",
    "refusal",
    "round_policy",
    "signed_contribution",
    "signed_partial",
    "verify_announcement",
]


@dataclass(frozen=True)
class Identities:
    """The certificate identities of a federation: ``spiffe://<trust_domain>/<role>/<id>``."""

    trust_domain: str

    def client(self, client_id: str) -> str:
        return spiffe_uri("client", client_id, federation=self.trust_domain)

    def edge(self, edge_id: str) -> str:
        return spiffe_uri("edge", edge_id, federation=self.trust_domain)

    def coordinator(self, coordinator_id: str) -> str:
        return spiffe_uri("coordinator", coordinator_id, federation=self.trust_domain)


def load_certificate(der: bytes, what: str) -> x509.Certificate:
    """A DER certificate from a message; :class:`InvalidMessage` if it does not parse."""
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except ValueError:
        raise InvalidMessage("certificate", f"{what}: the signer's certificate is not valid DER"
                             ) from None


class Signer:
    """Signs statements with this party's certificate key (the TLS key on disk)."""

    def __init__(self, loaded: LoadedTLS) -> None:
        self._key: Any = serialization.load_pem_private_key(loaded.key_pem, password=None)
        cert = x509.load_pem_x509_certificate(loaded.cert_pem)
        self.certificate_der = cert.public_bytes(serialization.Encoding.DER)
        self.ca_certificate = x509.load_pem_x509_certificate(loaded.ca_pem)
        self.identities = Identities(loaded.federation)
        self.identity = loaded.identity

    def sign(self, statement: bytes) -> d.SignedBytes:
        """``statement`` signed, with this party's certificate."""
        return d.SignedBytes(statement, sign_statement(statement, self._key), self.certificate_der)


def refusal(exc: BaseException) -> Rejection:
    """A failed signature or evidence check as a refusal with a stable reason."""
    if isinstance(exc, Rejection):
        return exc
    if isinstance(exc, SignatureError):
        return Unauthenticated("signature", str(exc))
    if isinstance(exc, EvidenceError):
        kind = InvalidMessage if exc.reason == "unsigned" else WrongState
        return kind(exc.reason, str(exc))
    raise exc


def signed_contribution(sb: d.SignedBytes) -> SignedContribution:
    """A client's signed claim as the core checks it (parsed, certificate loaded)."""
    try:
        claim = ContributionClaim.from_bytes(sb.statement)
    except SignatureError as exc:
        raise InvalidMessage("claim_malformed", str(exc)) from None
    return SignedContribution(claim, bytes(sb.signature),
                              load_certificate(sb.certificate, "a contribution claim"))


def signed_partial(vec: CiphertextVector, ev: d.PartialEvidence) -> SignedPartial:
    """An edge's partial sum with its evidence, as the core checks it."""
    try:
        claim = PartialClaim.from_bytes(ev.claim.statement)
    except SignatureError as exc:
        raise InvalidMessage("claim_malformed", str(exc)) from None
    return SignedPartial(vec, claim, bytes(ev.claim.signature),
                         load_certificate(ev.claim.certificate, "a partial-sum claim"),
                         tuple(signed_contribution(c) for c in ev.contributions))


def round_policy(*, federation: str, key_fingerprint: str, round: int, phase: str, mode: str,
                 min_clients: int, min_per_partial: int, adapter_version: int,
                 max_staleness: int, staleness_exponent: float,
                 assignments: Iterable[d.Assignment]) -> RoundPolicy:
    """The core's policy for one round (async: lags and staleness factors allowed)."""
    asynchronous = mode == "async"
    return RoundPolicy(
        federation=federation, round=round, phase=phase, key_fingerprint=key_fingerprint,
        min_clients=min_clients, min_per_partial=min_per_partial,
        assignments={a.client_id: (a.rank, a.weight) for a in assignments},
        max_lag=max_staleness if asynchronous else 0,
        staleness_exponent=staleness_exponent if asynchronous else None,
        adapter_version=adapter_version)


def verify_announcement(sb: d.SignedBytes, *, ca_certificate: x509.Certificate,
                        expected_signer_uri: str, pinned_fingerprint: str | None,
                        federation: str | None) -> KeyAnnouncement:
    """The federation key, accepted only if the expected coordinator signed it (and it is the
    pinned key, when a pin is configured); :class:`SignatureError` says why not."""
    announcement = KeyAnnouncement.from_bytes(sb.statement)
    try:
        cert = x509.load_der_x509_certificate(bytes(sb.certificate))
    except ValueError:
        raise SignatureError("the key announcement's certificate is not valid DER") from None
    announcement.verify(bytes(sb.signature), certificate=cert, ca_certificate=ca_certificate,
                        expected_signer_uri=expected_signer_uri,
                        pinned_fingerprint=pinned_fingerprint, federation=federation)
    return announcement
