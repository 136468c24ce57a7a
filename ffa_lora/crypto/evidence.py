"""What a key holder checks before it contributes a decryption share.

A holder decrypts only the global sum of a round, and only when the coordinator shows
evidence that it is one:

1. the ciphertext vector is exactly the homomorphic sum of the round's partial sums;
2. every partial sum is signed by its edge (CA-issued certificate of that edge) and is for
   this federation, round, phase and key, and lists at least ``min_per_partial`` clients;
3. every client an edge lists signed its own contribution for this round (its certificate,
   its id), with the weight the edge lists (and the rank and weight the round plan
   assigned, when given), and no client is counted twice; in asynchronous mode the weight
   the edge lists is the signed weight times the staleness factor recomputed here from the
   signed versions (:func:`~ffa_lora.crypto.weights.staleness_weight`), and partial sums and
   claims may be up to ``max_lag`` rounds old;
4. together the partials cover at least ``min_clients`` distinct clients.

What this cannot check: that an edge really multiplied the listed clients' ciphertexts
into its partial (the holder sees only the partial). An edge that lies there is malicious,
not merely curious, and its signature on the partial makes the lie attributable.

At most one decryption per round is the holder's own bookkeeping (durably, before it
answers); see :class:`DecryptionEvidence` for what it should record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from ffa_lora.crypto.canonical import vector_digest
from ffa_lora.crypto.signing import (
    ContributionClaim,
    PartialClaim,
    round_context,
    verify_statement,
)
from ffa_lora.crypto.vector import CiphertextVector, add
from ffa_lora.crypto.weights import staleness_weight
from ffa_lora.errors import ProtocolError

__all__ = [
    "DecryptionEvidence",
    "EvidenceError",
    "RoundPolicy",
    "SignedContribution",
    "SignedPartial",
    "check_decryption_evidence",
    "check_partial",
]


class EvidenceError(ProtocolError):
    """The evidence does not allow decryption; ``reason`` says which check failed (a stable
    code such as ``below_min_clients``, ``weights``, ``wrong_round``, ``not_the_sum``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SignedContribution:
    """A client's signed claim and the certificate it signed with."""

    claim: ContributionClaim
    signature: bytes
    certificate: x509.Certificate


@dataclass(frozen=True)
class SignedPartial:
    """An edge's partial sum, its signed claim, and the client claims it lists."""

    vector: CiphertextVector
    claim: PartialClaim
    signature: bytes
    certificate: x509.Certificate
    contributions: tuple[SignedContribution, ...]


@dataclass(frozen=True)
class RoundPolicy:
    """What the holder knows independently of the coordinator's request.

    Attributes:
        federation, round, phase: the round being decrypted.
        key_fingerprint: the federation key's fingerprint.
        min_clients: distinct signed clients needed in the sum.
        min_per_partial: clients each partial must list (defence in depth).
        assignments: client id → (rank, weight) from the round plan, when the holder has it.
        max_lag: asynchronous mode: partial sums labelled up to this many rounds before
            ``round``, and client claims up to this many rounds before their partial, count.
        staleness_exponent: asynchronous mode (None: synchronous): an edge lists each client
            with its signed weight times ``staleness_weight(A - base_version, exponent)``, A
            the adapter version in the edge's signed claim.
        adapter_version: when given, no edge's claim may name a newer adapter version.
    """

    federation: str
    round: int
    phase: str
    key_fingerprint: str
    min_clients: int
    min_per_partial: int = 1
    assignments: Mapping[str, tuple[int, int]] | None = None
    max_lag: int = 0
    staleness_exponent: float | None = None
    adapter_version: int | None = None

    def listed_weight(self, claim: ContributionClaim, partial: PartialClaim) -> int:
        """The weight an honest edge multiplies ``claim``'s update by in ``partial``."""
        if self.staleness_exponent is None:
            return claim.weight
        tau = partial.adapter_version - claim.base_version
        return claim.weight * staleness_weight(tau, self.staleness_exponent)

    def context(self) -> bytes:
        """The context every decryption share of this round is bound to (pass it to
        ``ShareDecryptor.decryption_share`` and ``Combiner.combine``)."""
        return round_context(federation=self.federation, round=self.round, phase=self.phase,
                             key_fingerprint=self.key_fingerprint)


@dataclass(frozen=True)
class DecryptionEvidence:
    """What a holder records when it agrees to decrypt (one per round, durably)."""

    round: int
    vector_digest: bytes
    clients: tuple[str, ...]
    edges: tuple[str, ...]
    weight_total: int


def _same_round(policy: RoundPolicy, fed: str, rnd: int, phase: str, fp: str, who: str, *,
                latest: int) -> None:
    """Same federation, phase and key; round in [latest - max_lag, latest]."""
    expected = (f"round {latest}" if policy.max_lag == 0
                else f"rounds {max(0, latest - policy.max_lag)}..{latest}")
    if (fed, phase, fp) != (policy.federation, policy.phase, policy.key_fingerprint) or not (
            latest - policy.max_lag <= rnd <= latest):
        raise EvidenceError("wrong_round", f"{who} is for another federation, round, phase or key "
                            f"(round {rnd}, phase {phase!r}; expected {expected}, "
                            f"phase {policy.phase!r})")


def _check_contribution(sc: SignedContribution, weight: int, policy: RoundPolicy,
                        partial: PartialClaim, *, ca: x509.Certificate,
                        client_uri: Callable[[str], str], now: dt.datetime | None) -> None:
    c = sc.claim
    who = f"the contribution of client '{c.client_id}'"
    _same_round(policy, c.federation, c.round, c.phase, c.key_fingerprint, who,
                latest=partial.round)
    verify_statement(c.canonical_bytes(), sc.signature, certificate=sc.certificate,
                     ca_certificate=ca, expected_uri=client_uri(c.client_id), what=who, now=now)
    expected = policy.listed_weight(c, partial)
    if weight != expected:
        detail = "" if expected == c.weight else f" times its staleness factor = {expected}"
        raise EvidenceError("weights",
                            f"{who} claims weight {c.weight}{detail}, its edge lists {weight}")
    if policy.assignments is not None:
        if c.client_id not in policy.assignments:
            raise EvidenceError("not_assigned",
                                f"client '{c.client_id}' has no assignment in round "
                                f"{policy.round}")
        rank, assigned = policy.assignments[c.client_id]
        if (c.rank, c.weight) != (rank, assigned):
            raise EvidenceError("weights",
                                f"{who} claims rank {c.rank} and weight {c.weight}; the round "
                                f"plan assigned rank {rank} and weight {assigned}")


def check_partial(sp: SignedPartial, policy: RoundPolicy, *, ca: x509.Certificate,
                  edge_uri: Callable[[str], str], client_uri: Callable[[str], str],
                  now: dt.datetime | None = None) -> list[str]:
    """Checks 1–3 of the module docstring for one partial sum (e.g. when it arrives); returns
    its clients. Raises :class:`SignatureError` or :class:`EvidenceError`."""
    pc = sp.claim
    who = f"the partial sum of edge '{pc.edge_id}'"
    _same_round(policy, pc.federation, pc.round, pc.phase, pc.key_fingerprint, who,
                latest=policy.round)
    if policy.adapter_version is not None and pc.adapter_version > policy.adapter_version:
        raise EvidenceError("wrong_round",
                            f"{who} names adapter version {pc.adapter_version}, newer than the "
                            f"round's {policy.adapter_version}")
    verify_statement(pc.canonical_bytes(), sp.signature, certificate=sp.certificate,
                     ca_certificate=ca, expected_uri=edge_uri(pc.edge_id), what=who, now=now)
    if vector_digest(sp.vector) != pc.vector_digest:
        raise EvidenceError("tampered",
                            f"{who} is not the vector its edge signed (digest mismatch)")
    if sp.vector.weight_total != pc.weight_total:
        raise EvidenceError("weights",
                            f"{who} carries weight total {sp.vector.weight_total}, its edge "
                            f"signed {pc.weight_total}")
    if len(pc.contributors) < policy.min_per_partial:
        raise EvidenceError("below_min_per_partial",
                            f"{who} lists {len(pc.contributors)} clients, fewer than the "
                            f"{policy.min_per_partial} a partial must cover")
    by_digest = {sc.claim.digest(): sc for sc in sp.contributions}
    for entry in pc.contributors:
        sc = by_digest.get(entry.claim_digest)
        if sc is None or sc.claim.client_id != entry.client_id:
            raise EvidenceError("unsigned", f"{who} lists client '{entry.client_id}' without that "
                                "client's signed contribution")
        _check_contribution(sc, entry.weight, policy, pc, ca=ca, client_uri=client_uri, now=now)
    return [e.client_id for e in pc.contributors]


def check_decryption_evidence(vec: CiphertextVector, partials: Sequence[SignedPartial], *,
                              policy: RoundPolicy, ca_certificate: x509.Certificate,
                              edge_uri: Callable[[str], str], client_uri: Callable[[str], str],
                              now: dt.datetime | None = None) -> DecryptionEvidence:
    """Check everything a key holder must see before it decrypts ``vec`` (module docstring).

    Args:
        edge_uri, client_uri: map an edge / client id to the certificate identity it must
            sign with (e.g. ``spiffe://<federation>/edge/<id>``).

    Raises:
        SignatureError: a certificate or signature does not verify (the message names whose).
        ProtocolError: the evidence is inconsistent or does not cover enough clients.
    """
    if not partials:
        raise EvidenceError("below_min_clients", "no partial sums were offered as evidence")
    clients: list[str] = []
    for sp in partials:
        clients += check_partial(sp, policy, ca=ca_certificate, edge_uri=edge_uri,
                                  client_uri=client_uri, now=now)
    if len(set(clients)) != len(clients):
        twice = sorted({c for c in clients if clients.count(c) > 1})
        raise EvidenceError("counted_twice",
                            f"clients counted in more than one partial: {', '.join(twice)}")
    if len(clients) < policy.min_clients:
        raise EvidenceError("below_min_clients",
                            f"the sum covers {len(clients)} distinct signed clients, fewer "
                            f"than min_clients = {policy.min_clients}; refusing to decrypt")
    total = partials[0].vector
    for sp in partials[1:]:
        total = add(total, sp.vector, vec.public_key)
    digest = vector_digest(vec)
    if vector_digest(total) != digest:
        raise EvidenceError("not_the_sum",
                            "the vector to decrypt is not the sum of the round's partial sums")
    return DecryptionEvidence(policy.round, digest, tuple(sorted(clients)),
                              tuple(sp.claim.edge_id for sp in partials),
                              sum(sp.claim.weight_total for sp in partials))
