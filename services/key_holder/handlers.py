"""A key holder's rules: when it gives its decryption share, and when it refuses.

A holder holds one share of the federation's threshold Paillier key; t shares decrypt, fewer
say nothing. Before it contributes to any decryption it checks, itself, everything that makes
the decrypted vector a legitimate round sum (:func:`ffa_lora.crypto.evidence.check_decryption_evidence`):

1. every partial sum is signed by its edge, every client the edge lists signed its own
   contribution, all certificates chain to the federation CA with the right identities;
2. rounds, phase and key match; weights add up (async: staleness factors recomputed) and
   match the round plan's assignments, which must respect the holder's own weight policy;
3. at least ``min_clients`` distinct clients in all, at least ``min_per_partial`` per partial
   (each the larger of the round plan's value and the holder's own floor);
4. the vector it decrypts is the product of those partials: the holder multiplies them itself;
5. one vector per round: it records (round, digest) durably BEFORE it answers and refuses any
   other vector for a recorded round (the same vector again is answered: a reconnect).

The coordinator runs the same class for its own share, so it checks everything before it asks
anyone. No transport here; :mod:`services.key_holder.link` carries requests and answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from ffa_lora.crypto.evidence import (
    DecryptionEvidence,
    EvidenceError,
    check_decryption_evidence,
    check_partial,
)
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.threshold import DecryptionShare, KeyShare, ShareDecryptor
from ffa_lora.crypto.vector import CiphertextVector, add
from ffa_lora.errors import CryptoError, SignatureError
from services.common import domain as d
from services.common.evidence import Identities, refusal, round_policy, signed_partial
from services.common.metrics import Metrics
from services.common.rejections import Duplicate, InvalidMessage, Rejection, WrongState
from services.key_holder.store import DecryptionRecord, HolderStore

__all__ = ["Approved", "HolderPolicy", "KeyHolder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HolderPolicy:
    """What the holder knows independently of any request.

    Attributes:
        federation: the federation's name, as every signed claim names it.
        min_clients: the holder's floor on distinct clients in a decrypted sum.
        min_per_partial: the holder's floor on clients per partial sum.
        max_weight: no client's assigned weight may exceed this.
        weights: declared weight per client; when given, a client's assigned weight must
            equal its entry (clients not listed are refused).
    """

    federation: str
    min_clients: int
    min_per_partial: int = 1
    max_weight: int = 16
    weights: Mapping[str, int] | None = field(default=None)


@dataclass(frozen=True)
class Approved:
    """A request that passed every check and is recorded: its sum may now be decrypted."""

    request: d.DecryptRequest
    total: CiphertextVector
    context: bytes
    evidence: DecryptionEvidence


class KeyHolder:
    """One key holder (a key-holder process, or the coordinator for its own share).

    Args:
        share: this holder's key share.
        policy: the holder's own floors and weight policy.
        store: where agreed rounds are recorded durably.
        ca_certificate, trust_domain: the federation CA every signer must chain to, and the
            trust domain of the identities it names.
        workers: processes for the share computation (None: all cores; 0: this process).
    """

    def __init__(self, *, share: KeyShare, policy: HolderPolicy, store: HolderStore,
                 ca_certificate: x509.Certificate, trust_domain: str, metrics: Metrics,
                 workers: int | None = None) -> None:
        self.share, self.policy, self.store, self.metrics = share, policy, store, metrics
        self.params = share.params
        self.ca_certificate = ca_certificate
        self.ids = Identities(trust_domain)
        self._decryptor = ShareDecryptor(share, workers=workers)

    @property
    def holder(self) -> str:
        """This holder's id in the threshold parameters."""
        return self.share.holder

    # -- the checks ---------------------------------------------------------------------------

    def approve(self, request: d.DecryptRequest) -> Approved:
        """Check ``request`` and record it; raise a :class:`Rejection` naming the failed check."""
        try:
            approved = self._check(request)
            self._record(approved)
        except Rejection as rej:
            self.metrics.shares_refused.labels(self.metrics.service, rej.reason).inc()
            log.warning("round %d: refusing to decrypt (%s): %s", request.round, rej.reason,
                        rej.message)
            raise
        return approved

    def _check(self, request: d.DecryptRequest) -> Approved:
        self._check_plan(request)
        try:
            layout = PackingLayout.from_bytes(request.layout)
            partials = [signed_partial(vec, ev) for vec, ev in request.partials]
            for vec, _ in request.partials:
                if vec.layout != layout or vec.num_values != request.num_values:
                    raise InvalidMessage("size_mismatch",
                                         "a partial sum has another layout or length than the round's")
            total = self._product([vec for vec, _ in request.partials])
            policy = round_policy(
                federation=self.policy.federation,
                key_fingerprint=self.params.public_key.fingerprint, round=request.round,
                phase=request.phase, mode=request.mode,
                min_clients=max(request.min_clients, self.policy.min_clients),
                min_per_partial=max(request.min_per_partial, self.policy.min_per_partial),
                adapter_version=request.adapter_version, max_staleness=request.max_staleness,
                staleness_exponent=request.staleness_exponent, assignments=request.assignments)
            evidence = check_decryption_evidence(
                total, partials, policy=policy, ca_certificate=self.ca_certificate,
                edge_uri=self.ids.edge, client_uri=self.ids.client)
        except (SignatureError, EvidenceError) as exc:
            raise refusal(exc) from None
        except CryptoError as exc:
            raise InvalidMessage("ciphertext_invalid", f"the partial sums do not add up: {exc}") from None
        return Approved(request, total, policy.context(), evidence)

    def _check_plan(self, request: d.DecryptRequest) -> None:
        """The round plan's weights against the holder's own weight policy."""
        if not request.partials:
            raise WrongState("below_min_clients", "the request carries no partial sums")
        declared = self.policy.weights
        for a in request.assignments:
            if not 1 <= a.weight <= self.policy.max_weight:
                raise WrongState("weights", f"the round plan gives client '{a.client_id}' weight "
                                 f"{a.weight}, outside this holder's policy [1, "
                                 f"{self.policy.max_weight}]")
            if declared is not None and declared.get(a.client_id) != a.weight:
                raise WrongState("weights", f"the round plan gives client '{a.client_id}' weight "
                                 f"{a.weight}; this holder's policy declares "
                                 f"{declared.get(a.client_id, 'no weight')} for it")

    def _product(self, vectors: list[CiphertextVector]) -> CiphertextVector:
        total = vectors[0]
        for vec in vectors[1:]:
            total = add(total, vec, self.params.public_key)
        return total

    def _record(self, approved: Approved) -> None:
        ev = approved.evidence
        rec = DecryptionRecord(ev.round, ev.vector_digest, ev.clients, ev.edges, ev.weight_total)
        held = self.store.record(rec)
        if held.vector_digest != rec.vector_digest:
            raise Duplicate("second_request",
                            f"round {ev.round} was already decrypted for another vector; this "
                            "holder decrypts one vector per round (retry with a fresh round)")

    def check_partial(self, vec: CiphertextVector, evidence: d.PartialEvidence, *, round: int,
                      phase: str, mode: str, adapter_version: int, max_staleness: int,
                      staleness_exponent: float, min_per_partial: int,
                      assignments: tuple[d.Assignment, ...]) -> list[tuple[str, int]]:
        """Checks of one partial sum as it arrives (signatures, round, weights, floor); its
        (client, listed weight) pairs. :class:`Rejection` naming the failed check."""
        policy = round_policy(
            federation=self.policy.federation, key_fingerprint=self.params.public_key.fingerprint,
            round=round, phase=phase, mode=mode, min_clients=1,
            min_per_partial=max(min_per_partial, self.policy.min_per_partial),
            adapter_version=adapter_version, max_staleness=max_staleness,
            staleness_exponent=staleness_exponent, assignments=assignments)
        sp = signed_partial(vec, evidence)
        try:
            check_partial(sp, policy, ca=self.ca_certificate, edge_uri=self.ids.edge,
                          client_uri=self.ids.client)
        except (SignatureError, EvidenceError) as exc:
            raise refusal(exc) from None
        return [(c.client_id, c.weight) for c in sp.claim.contributors]

    # -- the share ------------------------------------------------------------------------------

    def decryption_share(self, approved: Approved) -> DecryptionShare:
        """This holder's proven decryption share of an approved sum."""
        t0 = time.perf_counter()
        share = self._decryptor.decryption_share(approved.total, context=approved.context)
        seconds = time.perf_counter() - t0
        self.metrics.shares_served.labels(self.metrics.service).inc()
        self.metrics.share_seconds.labels(self.metrics.service).observe(seconds)
        log.info("round %d: decryption share of %d ciphertexts in %.2fs (%d clients, edges %s)",
                 approved.request.round, len(approved.total.values), seconds,
                 len(approved.evidence.clients), ", ".join(approved.evidence.edges))
        return share

    def answer(self, request: d.DecryptRequest) -> DecryptionShare:
        """Check, record, then compute the share; :class:`Rejection` when it refuses."""
        return self.decryption_share(self.approve(request))

    def warm_up(self) -> None:
        """Start the share workers now (they receive the share once)."""
        self._decryptor.warm_up()

    def close(self) -> None:
        self._decryptor.close()
        self.store.close()
